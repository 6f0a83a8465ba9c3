"""Operation constructors for ``store.operate(key, [ops...])``.

All ops of one ``operate`` call apply atomically to one record with a single generation bump (if any op
writes). ``read`` ops fill the returned record's bins with the value at that point of the sequence.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidBinError

PUT, INCR, APPEND, REMOVE, READ, TOUCH = "put", "incr", "append", "remove", "read", "touch"
WRITE_KINDS = frozenset({PUT, INCR, APPEND, REMOVE, TOUCH})


class Op:
    """One operation; build with the functions of this module, not directly."""

    __slots__ = ("bin", "kind", "max_len", "value")

    def __init__(self, kind: str, bin: str | None, value: Any = None, max_len: int | None = None) -> None:
        self.kind = kind
        self.bin = bin
        self.value = value
        self.max_len = max_len

    def __repr__(self) -> str:
        extra = f", max_len={self.max_len}" if self.max_len is not None else ""
        return f"ops.{self.kind}({self.bin!r}, {self.value!r}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Op):
            return NotImplemented
        mine = (self.kind, self.bin, self.value, self.max_len)
        return mine == (other.kind, other.bin, other.value, other.max_len)

    __hash__ = None  # type: ignore[assignment]


def _bin(name: Any) -> str:
    if type(name) is not str or not name:
        raise InvalidBinError(f"bin name must be a non-empty str, got {name!r}")
    return name


def put(bin: str, value: Any) -> Op:
    """Set a bin (None removes it)."""
    return Op(PUT, _bin(bin), value)


def incr(bin: str, n: int | float = 1) -> Op:
    """Add n to a numeric bin; a missing bin counts as 0. Non-numeric bins raise InvalidBinError."""
    if type(n) not in (int, float):
        raise InvalidBinError(f"incr amount must be int or float, got {type(n).__name__}")
    return Op(INCR, _bin(bin), n)


def append(bin: str, item: Any, max_len: int | None = None) -> Op:
    """Append item to a list bin (created if missing); with max_len, drop the oldest items beyond it."""
    if max_len is not None and (type(max_len) is not int or max_len < 1):
        raise InvalidBinError(f"max_len must be a positive int, got {max_len!r}")
    return Op(APPEND, _bin(bin), item, max_len)


def remove(bin: str) -> Op:
    """Remove a bin (no error if missing)."""
    return Op(REMOVE, _bin(bin))


def read(bin: str | None = None) -> Op:
    """Return a bin's value in the result (all bins when bin is None); missing bins are left out."""
    return Op(READ, None if bin is None else _bin(bin))


def touch(ttl: float | None = None) -> Op:
    """Bump the generation and set the record's TTL (seconds; None = never expires)."""
    return Op(TOUCH, None, ttl)
