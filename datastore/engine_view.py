"""The seam between the embedded engine and the two jobs that work on its log from outside: compaction and
verification. The engine hands them an ``EngineView``: the log, read access to the index, the compaction
lock, and the only two index changes compaction makes. Neither job imports the engine.

``Entry`` is the index's record version (shared by both sides of the seam).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Protocol

from .logstore import LogStore, Segment


class Entry:
    """Current version of one record. ``bins`` caches the decoded dict when every value is immutable
    (None = not decoded yet, False = has lists/dicts: decode a fresh copy per read)."""

    __slots__ = ("bins", "exp", "gen", "off", "packed", "seg", "set", "size", "ukey")

    def __init__(self, set_name: str, ukey: Any, gen: int, exp: float | None, packed: bytes,
                 bins: Any, seg: Segment, off: int, size: int) -> None:
        self.set = set_name
        self.ukey = ukey
        self.gen = gen
        self.exp = exp
        self.packed = packed
        self.bins = bins
        self.seg = seg
        self.off = off
        self.size = size


class EngineView(Protocol):
    """What compaction and verify may see and do of an engine. Reads never await, so a caller that does
    not await between two calls sees one consistent index."""

    @property
    def log(self) -> LogStore | None:
        """The log (None for ``memory://``)."""

    @property
    def closed(self) -> bool: ...

    @property
    def epoch(self) -> int:
        """Bumped whenever the index is rebuilt from disk: work based on an older epoch must be dropped."""

    @property
    def compact_lock(self) -> asyncio.Lock:
        """Held by a compaction round (and by ``close`` waiting for one)."""

    @property
    def compact_threshold(self) -> float: ...

    def entry(self, namespace: str, digest: bytes) -> Entry | None:
        """The current version of a record (expired ones included until swept)."""

    def entries(self) -> Iterator[tuple[str, bytes, Entry]]:
        """Every (namespace, digest, entry) of the index; do not await while iterating."""

    def partition_counts(self) -> list[int]:
        """Records per partition, as the engine counts them."""

    def expire(self, namespace: str, digest: bytes, entry: Entry) -> None:
        """Drop an expired current version from the index (compaction found it while copying)."""

    def relocate(self, namespace: str, digest: bytes, entry: Entry, seg: Segment, off: int) -> bool:
        """Point a record at its copy in a compaction output, if ``entry`` is still its current version."""

    def count_compaction(self) -> None: ...

    async def sync(self) -> None:
        """Make every write so far durable."""
