"""The embedded store: an in-memory index of current record versions over an append-only log.

Index: one dict per namespace, digest -> ``Entry`` (the current version: generation, expiry, packed bins,
and where its frame lives), plus a record count per partition. Reads never await and never touch the
disk. Writes are checked by ``policy``, appended to the log, applied to the index, then (``fsync``
durability only) await the group commit. In ``fsync`` mode a concurrent reader may see a write before it
is acknowledged; if that commit then fails the engine reloads the index from disk, so the store always
matches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import compaction, fileio, frame, recovery, verify
from .base import Store
from .engine_view import Entry
from .errors import (
    GenerationError,
    InvalidKeyError,
    RecordNotFoundError,
    RecordTooBigError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
)
from .keys import N_PARTITIONS, Key, partition_of
from .logstore import DEFAULT_SEGMENT_BYTES, FSYNC, LogStore, Segment, list_segments
from .ops import Op
from .policy import (
    apply_ops,
    check_write,
    creates_data,
    expiry,
    is_flat,
    merge_bins,
    validate_bins,
    validate_ops,
)
from .record import Record

log = logging.getLogger("datastore.engine")

_time = time.time
_pack = frame.pack
_unpack = frame.unpack
_encode_put = frame.encode_put
_PUT = frame.PUT


@dataclass
class Options:
    """Engine options (all settable in the ``open_store`` URL query)."""

    durability: str = FSYNC
    max_record_bytes: int = 128 * 1024
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    fsync_interval: float = 0.1  # flush durability: background fsync period
    sweep_interval: float = 1.0  # TTL sweeper period (0 disables)
    compact_interval: float = 10.0  # background compaction check period (0 disables)
    compact_threshold: float = 0.5  # compact sealed segments whose live ratio is below this


def _bins_copy(e: Entry) -> dict[str, Any]:
    """A bins dict the caller may mutate freely."""
    b = e.bins
    if b:
        return b.copy()
    if b is None:
        b = _unpack(e.packed)
        if is_flat(b):
            e.bins = b
            return b.copy()
        e.bins = False
        return b
    return _unpack(e.packed)


class Engine(Store):
    """Embedded store; build with ``open_store("file:///dir")`` or ``open_store("memory://")``."""

    def __init__(self, directory: str | None, options: Options) -> None:
        self.directory = directory
        self.options = options
        self._ns: dict[str, dict[bytes, Entry]] = {}
        self._pcount = [0] * N_PARTITIONS
        self._ttl_heap: list[tuple[float, str, bytes]] = []
        self._max = options.max_record_bytes
        self._closed = False
        self._log: LogStore | None = None
        self._sync = False
        self._mem_seg = Segment(directory or "", 0, 0)
        self._lock_fd = -1
        self._tasks: list[asyncio.Task[None]] = []
        self.epoch = 0  # bumped when the index is rebuilt from disk (compaction aborts on change)
        self.compact_lock = asyncio.Lock()
        self._view = _View(self)
        self.counters = dict.fromkeys(
            ("gets", "puts", "deletes", "operates", "scans", "expired", "compactions", "reloads"), 0
        )

    # --- opening / closing -------------------------------------------------------------------------

    @classmethod
    async def open(cls, directory: str | None, options: Options) -> Engine:
        """Open (and recover) a store; ``directory=None`` for a memory-only store."""
        self = cls(directory, options)
        if directory is not None:
            fileio.makedirs(directory)
            try:
                self._lock_fd = fileio.lock(os.path.join(directory, "LOCK"))
            except OSError as exc:
                raise StoreLockedError(f"{directory} is already open (lock held): {exc}") from exc
            try:
                recovery.remove_temp_files(directory)
                segments = list_segments(directory)
                self._replay(segments)
                if segments and segments[-1].minor != 0:  # never append to a compaction output
                    segments.append(Segment(directory, segments[-1].major + 1, 0))
                self._log = LogStore(
                    directory, options.durability, segments,
                    segment_bytes=options.segment_bytes, fsync_interval=options.fsync_interval,
                    on_fault=self._reload_after_fault,
                )
            except BaseException:
                fileio.unlock(self._lock_fd)
                raise
            self._sync = options.durability == FSYNC
            self._log.start()
            if options.compact_interval > 0:
                self._tasks.append(asyncio.create_task(self._compact_loop(), name="datastore-compact"))
        if options.sweep_interval > 0:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name="datastore-sweep"))
        return self

    def _replay(self, segments: list[Segment]) -> int:
        """Rebuild the index from segment files (gc paused: replay allocates millions of objects)."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            now = _time()
            ns_map = self._ns
            pcount = self._pcount
            heap = self._ttl_heap

            def apply(seg: Segment, off: int, size: int, f: list[Any]) -> None:
                kind, ns, set_name, ukey, d, gen, exp, pb = f
                idx = ns_map.get(ns)
                if idx is None:
                    idx = ns_map[ns] = {}
                old = idx.get(d)
                if kind == _PUT and (exp is None or exp > now):
                    idx[d] = Entry(set_name, ukey, gen, exp, pb, None, seg, off, size)
                    seg.live += size
                    if old is None:
                        pcount[((d[14] & 15) << 8) | d[15]] += 1
                    else:
                        old.seg.live -= old.size
                    if exp is not None:
                        heap.append((exp, ns, d))
                    return
                if kind != _PUT:
                    seg.tomb += size
                if old is not None:
                    del idx[d]
                    old.seg.live -= old.size
                    pcount[((d[14] & 15) << 8) | d[15]] -= 1

            n = recovery.replay(segments, apply)
            heapq.heapify(heap)
            return n
        finally:
            if was_enabled:
                gc.enable()

    def _reload_after_fault(self) -> None:
        """A group commit failed: drop every unacknowledged change by rebuilding the index from disk."""
        assert self._log is not None
        self.epoch += 1
        self.counters["reloads"] += 1
        self._ns.clear()
        self._pcount[:] = [0] * N_PARTITIONS
        self._ttl_heap.clear()
        for seg in self._log.segments:
            seg.live = seg.tomb = 0
        try:
            self._replay(list(self._log.segments))
        except Exception as exc:
            self._log.failed = StorageError(f"reloading the index after a disk fault failed ({exc}); "
                                            "reopen the store")
            log.error("%s", self._log.failed)

    async def close(self) -> None:
        """Stop background work, write and fsync everything, release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        async with self.compact_lock:
            pass
        try:
            if self._log is not None:
                await self._log.close()
        finally:
            if self._lock_fd >= 0:
                fileio.unlock(self._lock_fd)
                self._lock_fd = -1

    @property
    def closed(self) -> bool:
        return self._closed

    # --- reads -------------------------------------------------------------------------------------

    async def get(self, key: Key) -> Record | None:
        if self._closed:
            raise StoreClosedError("store is closed")
        self.counters["gets"] += 1
        idx = self._ns.get(key.namespace)
        if idx is None:
            return None
        e = idx.get(key.digest)
        if e is None:
            return None
        exp = e.exp
        if exp is not None and exp <= _time():
            return None
        b = e.bins
        return Record(key, b.copy() if b else _bins_copy(e), e.gen, exp)

    def _read(self, key: Key, now: float) -> Record | None:
        idx = self._ns.get(key.namespace)
        if idx is None:
            return None
        e = idx.get(key.digest)
        if e is None or (e.exp is not None and e.exp <= now):
            return None
        return Record(key, _bins_copy(e), e.gen, e.exp)

    async def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        if self._closed:
            raise StoreClosedError("store is closed")
        self.counters["gets"] += len(keys)
        now = _time()
        read = self._read
        return [read(k, now) for k in keys]

    async def scan(self, namespace: str, set: str) -> AsyncIterator[Record]:
        if self._closed:
            raise StoreClosedError("store is closed")
        if type(namespace) is not str or type(set) is not str:
            raise InvalidKeyError("scan needs namespace and set names (str)")
        self.counters["scans"] += 1
        idx = self._ns.get(namespace)
        if not idx:
            return
        snapshot = [(d, e) for d, e in idx.items() if e.set == set]
        now = _time()
        for i, (d, e) in enumerate(snapshot):
            if e.exp is not None and e.exp <= now:
                continue
            yield Record(Key._trusted(namespace, set, e.ukey, d), _bins_copy(e), e.gen, e.exp)
            if i & 1023 == 1023:
                await asyncio.sleep(0)

    async def scan_all(self) -> AsyncIterator[Record]:
        """Every live record of every namespace and set (for backup)."""
        for ns in list(self._ns):
            sets = {e.set for e in self._ns[ns].values()}
            for s in sorted(sets):
                async for rec in self.scan(ns, s):
                    yield rec

    # --- writes ------------------------------------------------------------------------------------

    def _namespace(self, ns: str) -> dict[bytes, Entry]:
        idx = self._ns.get(ns)
        if idx is None:
            if type(ns) is not str or not ns:
                raise InvalidKeyError(f"bad namespace {ns!r}")
            idx = self._ns[ns] = {}
        return idx

    def _install(self, idx: dict[bytes, Entry], key: Key, old: Entry | None, gen: int, exp: float | None,
                 pb: bytes, bins: Any) -> None:
        """Append the record's frame and make it the current version (raises StorageError first)."""
        if self._log is not None:
            data = _encode_put(key.namespace, key.set, key.user_key, key.digest, gen, exp, pb)
            seg, off = self._log.append(data)
            size = len(data)
        else:
            seg, off, size = self._mem_seg, 0, len(pb)
        d = key.digest
        idx[d] = Entry(key.set, key.user_key, gen, exp, pb, bins, seg, off, size)
        seg.live += size
        if old is None:
            self._pcount[key.partition] += 1
        else:
            old.seg.live -= old.size
        if exp is not None:
            heapq.heappush(self._ttl_heap, (exp, key.namespace, d))

    def _slot(self, key: Key) -> tuple[Any, Any, Any]:
        """(namespace index, stored entry or None, live entry or None: an expired one counts as absent)."""
        idx = self._ns.get(key.namespace) or self._namespace(key.namespace)
        old = idx.get(key.digest)
        if old is not None and old.exp is not None and old.exp <= _time():
            return idx, old, None
        return idx, old, old

    async def put(self, key: Key, bins: dict[str, Any], *, generation: int | None = None,
                  exists: str = "upsert", ttl: float | None = None) -> int:
        if self._closed:
            raise StoreClosedError("store is closed")
        flat = validate_bins(bins)
        idx, old, cur = self._slot(key)
        if cur is None:
            if generation is not None or exists != "upsert":
                check_write(exists, generation, None)
            new = {k: v for k, v in bins.items() if v is not None}
            gen = 1
            exp = None if ttl is None else expiry(ttl, _time(), None)
        else:
            if generation is not None or exists != "upsert":
                check_write(exists, generation, cur.gen)
            replace = exists == "replace"
            if replace:
                new = {k: v for k, v in bins.items() if v is not None}
            else:
                cb = cur.bins
                new = merge_bins(cb if cb else _unpack(cur.packed), bins, False)
                flat = is_flat(new) if flat else False
            gen = cur.gen + 1
            exp = None if ttl is None else expiry(ttl, _time(), cur.exp)
        pb = _pack(new)
        if len(pb) > self._max:
            raise RecordTooBigError(f"record {key!r} packs to {len(pb)} bytes > max_record_bytes {self._max}")
        self._install(idx, key, old, gen, exp, pb, new if flat else False)
        self.counters["puts"] += 1
        if self._sync:
            await self._log.wait()  # type: ignore[union-attr]
        return gen

    async def operate(self, key: Key, op_list: Sequence[Op], *, generation: int | None = None,
                      ttl: float | None = None) -> Record:
        if self._closed:
            raise StoreClosedError("store is closed")
        validate_ops(op_list)
        idx, old, cur = self._slot(key)
        if cur is None:
            if not creates_data(op_list):
                raise RecordNotFoundError(f"operate on absent {key!r} without an op that creates data")
            check_write("upsert", generation, None)
            bins: dict[str, Any] = {}
        else:
            check_write("upsert", generation, cur.gen)
            bins = _unpack(cur.packed)  # a private deep copy: ops may mutate lists in place
        bins, reads, wrote, new_ttl = apply_ops(bins, list(op_list), ttl)
        self.counters["operates"] += 1
        if not wrote:
            assert cur is not None
            return Record(key, reads, cur.gen, cur.exp)
        gen = 1 if cur is None else cur.gen + 1
        exp = None if new_ttl is None else expiry(new_ttl, _time(), None if cur is None else cur.exp)
        pb = _pack(bins)
        if len(pb) > self._max:
            raise RecordTooBigError(f"record {key!r} packs to {len(pb)} bytes > max_record_bytes {self._max}")
        self._install(idx, key, old, gen, exp, pb, bins if is_flat(bins) else False)
        if self._sync:
            await self._log.wait()  # type: ignore[union-attr]
        return Record(key, reads, gen, exp)

    async def delete(self, key: Key, *, generation: int | None = None) -> bool:
        if self._closed:
            raise StoreClosedError("store is closed")
        idx = self._ns.get(key.namespace)
        if idx is None:
            return False
        d = key.digest
        old = idx.get(d)
        if old is None:
            return False
        if old.exp is not None and old.exp <= _time():
            self._drop(key.namespace, d, old)
            return False
        if generation is not None and generation != old.gen:
            raise GenerationError(f"expected generation {generation}, record is at {old.gen}")
        if self._log is not None:
            data = frame.encode_del(key.namespace, key.set, key.user_key, d, old.gen + 1)
            seg, _ = self._log.append(data)
            seg.tomb += len(data)
        self._drop(key.namespace, d, old)
        self.counters["deletes"] += 1
        if self._sync:
            await self._log.wait()  # type: ignore[union-attr]
        return True

    def _drop(self, ns: str, d: bytes, e: Entry) -> None:
        """Remove a current version from the index (deleted or expired)."""
        del self._ns[ns][d]
        e.seg.live -= e.size
        self._pcount[partition_of(d)] -= 1

    async def restore_record(self, key: Key, bins: dict[str, Any], generation: int,
                             expires_at: float | None) -> None:
        """Write a record with an exact generation and expiry (backup restore); overwrites any version."""
        if self._closed:
            raise StoreClosedError("store is closed")
        validate_bins(bins)
        idx = self._namespace(key.namespace)
        new = {k: v for k, v in bins.items() if v is not None}
        pb = _pack(new)
        self._install(idx, key, idx.get(key.digest), generation, expires_at, pb, None)
        if self._sync:
            await self._log.wait()  # type: ignore[union-attr]

    # --- background work ---------------------------------------------------------------------------

    def sweep(self, limit: int = 10_000) -> int:
        """Drop up to ``limit`` expired records from the index; returns how many (their log bytes become
        dead and are reclaimed by compaction, which keeps a tombstone while an older version may exist)."""
        heap = self._ttl_heap
        now = _time()
        n = 0
        while heap and heap[0][0] <= now and n < limit:
            _exp, ns, d = heapq.heappop(heap)
            e = self._ns.get(ns, {}).get(d)
            if e is not None and e.exp is not None and e.exp <= now:
                self._drop(ns, d, e)
                n += 1
        self.counters["expired"] += n
        return n

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.sweep_interval)
            for _ in range(1000):  # bounded: at most 10M records per round, yielding between chunks
                if self.sweep() < 10_000:
                    break
                await asyncio.sleep(0)

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.compact_interval)
            try:
                await compaction.compact(self._view)
            except Exception as exc:  # keep serving; the next round retries
                log.error("background compaction failed: %s", exc)

    async def compact(self, *, force: bool = False) -> dict[str, Any]:
        """Compact sealed segments below the live-ratio threshold (every sealed segment with any dead
        byte when ``force``). Returns a report. Writes continue meanwhile."""
        if self._closed:
            raise StoreClosedError("store is closed")
        return await compaction.compact(self._view, force=force)

    async def confirm_read(self, rec: Record) -> None:
        """fsync durability: a reader may see a write before its group commit; wait for that commit."""
        if self._sync:
            await self._log.sync()  # type: ignore[union-attr]

    async def sync(self) -> None:
        """Make every write so far durable (whatever the durability mode)."""
        if self._log is not None:
            await self._log.sync()

    async def verify(self) -> dict[str, Any]:
        """Check the index against the log (see ``datastore.verify``); returns a report with ``ok``."""
        if self._closed:
            raise StoreClosedError("store is closed")
        return await verify.verify(self._view)

    def stats(self) -> dict[str, Any]:
        """Record counts, storage bytes and operation counters, for metrics."""
        out: dict[str, Any] = {
            "backend": "file" if self._log is not None else "memory",
            "durability": self.options.durability if self._log is not None else "memory",
            "records": sum(len(i) for i in self._ns.values()),
            "namespaces": {ns: len(i) for ns, i in self._ns.items()},
            "partitions_used": sum(1 for c in self._pcount if c),
            "ttl_pending": len(self._ttl_heap),
        }
        if self._log is not None:
            segs = self._log.segments
            total = sum(s.size for s in segs)
            live = sum(s.live for s in segs)
            out.update(
                segments=len(segs),
                log_bytes=total,
                live_bytes=live,
                tombstone_bytes=sum(s.tomb for s in segs),
                dead_bytes=total - live,
                fsyncs=self._log.fsync_count,
                fsync_errors=self._log.fsync_errors,
            )
        out.update(self.counters)
        out.update(super().stats())
        return out


class _View:
    """The ``EngineView`` the engine hands compaction and verify (see ``datastore.engine_view``)."""

    __slots__ = ("_e",)

    def __init__(self, engine: Engine) -> None:
        self._e = engine

    @property
    def log(self) -> LogStore | None:
        return self._e._log

    @property
    def closed(self) -> bool:
        return self._e._closed

    @property
    def epoch(self) -> int:
        return self._e.epoch

    @property
    def compact_lock(self) -> asyncio.Lock:
        return self._e.compact_lock

    @property
    def compact_threshold(self) -> float:
        return self._e.options.compact_threshold

    def entry(self, namespace: str, digest: bytes) -> Entry | None:
        idx = self._e._ns.get(namespace)
        return None if idx is None else idx.get(digest)

    def entries(self) -> Iterator[tuple[str, bytes, Entry]]:
        for ns, idx in self._e._ns.items():
            for d, e in idx.items():
                yield ns, d, e

    def partition_counts(self) -> list[int]:
        return list(self._e._pcount)

    def expire(self, namespace: str, digest: bytes, entry: Entry) -> None:
        self._e._drop(namespace, digest, entry)

    def relocate(self, namespace: str, digest: bytes, entry: Entry, seg: Segment, off: int) -> bool:
        if self.entry(namespace, digest) is not entry:
            return False
        entry.seg.live -= entry.size
        entry.seg = seg
        entry.off = off
        seg.live += entry.size
        return True

    def count_compaction(self) -> None:
        self._e.counters["compactions"] += 1

    async def sync(self) -> None:
        await self._e.sync()
