"""``Record``: what reads return."""

from __future__ import annotations

from typing import Any

from .keys import Key


class Record:
    """One record as read: ``key``, ``bins`` (a dict the caller owns), ``generation``, ``expires_at``.

    ``expires_at`` is a Unix time in seconds (float) or None for records that never expire.
    """

    __slots__ = ("bins", "expires_at", "generation", "key")

    def __init__(self, key: Key, bins: dict[str, Any], generation: int, expires_at: float | None) -> None:
        self.key = key
        self.bins = bins
        self.generation = generation
        self.expires_at = expires_at

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.key, self.bins, self.generation, self.expires_at) == (
            other.key,
            other.bins,
            other.generation,
            other.expires_at,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Record({self.key!r}, {self.bins!r}, generation={self.generation}, "
                f"expires_at={self.expires_at})")
