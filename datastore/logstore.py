"""Segment files, the active segment, and the three durability modes.

Writes append frames to ONE active segment; when it reaches ``segment_bytes`` it is sealed and a new one
(next ``major`` number) becomes active. Replay order is (major, minor): compaction outputs take the
major of their newest input and a higher minor, so they replay after their inputs and before anything
written later.

Durability (when ``append`` + ``wait`` acknowledge a write):

- ``fsync``: frames go to an in-memory batch; one commit loop writes the batch and fsyncs it in a worker
  thread, then resolves ONE future for every writer of that batch (group commit). The next batch starts
  as soon as the previous fsync returns. A failed write/fsync fails the whole batch (and the one queued
  behind it), truncates the segment back to its last durable size and calls ``on_fault`` so the engine
  drops the unacknowledged state.
- ``flush``: each frame is written to the OS inside ``append`` (no yield to the event loop); a background
  task fsyncs dirty segments at most every ``fsync_interval`` seconds (0.1 s by default). A failed write is
  truncated away and raises StorageError before the engine changes anything.
- ``memory``: frames are buffered in the process and written in large chunks and at ``close()``; a crash
  loses the buffer (no durability promise at all, but a clean close persists everything).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import fileio
from .errors import StorageError

log = logging.getLogger("datastore.log")

FSYNC, FLUSH, MEMORY = "fsync", "flush", "memory"
DURABILITIES = (FSYNC, FLUSH, MEMORY)
DEFAULT_SEGMENT_BYTES = 64 << 20
MEMORY_BUFFER_BYTES = 1 << 20
_NAME = re.compile(r"^(\d{10})-(\d{4})\.log$")


class Segment:
    """One log file. ``size``: bytes appended (logical); ``synced``: bytes known durable on disk;
    ``live``: bytes of frames that are the current version of a record; ``tomb``: bytes of tombstones."""

    __slots__ = ("dir_synced", "fd", "live", "major", "minor", "path", "size", "synced", "tomb")

    def __init__(self, directory: str, major: int, minor: int, size: int = 0) -> None:
        self.major = major
        self.minor = minor
        self.path = os.path.join(directory, segment_name(major, minor))
        self.fd = -1
        self.size = size
        self.synced = size
        self.live = 0
        self.tomb = 0
        self.dir_synced = True

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def order(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __repr__(self) -> str:
        return f"<Segment {self.name} size={self.size} live={self.live} tomb={self.tomb}>"


def segment_name(major: int, minor: int) -> str:
    """File name of a segment; sorting names sorts replay order."""
    return f"{major:010d}-{minor:04d}.log"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(major, minor) of a segment file name, or None for other files."""
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def list_segments(directory: str) -> list[Segment]:
    """Segments found in a directory, in replay order (sizes from the file system)."""
    found = []
    for name in fileio.listdir(directory):
        order = parse_segment_name(name)
        if order is not None:
            seg = Segment(directory, *order)
            seg.size = seg.synced = fileio.file_size(seg.path)
            found.append(seg)
    found.sort(key=lambda s: s.order)
    return found


def _storage_error(action: str, exc: OSError, *, in_doubt: bool = False) -> StorageError:
    """The error of a failed write: in doubt only when its bytes could not be cut off the file again."""
    if in_doubt:
        return StorageError(f"{action} failed: {exc}; the write was not acknowledged, but its bytes may "
                            "still be in the log (the file could not be cut back)", in_doubt=True)
    return StorageError(f"{action} failed: {exc}; the write was not acknowledged")


class LogStore:
    """Appends frames to the active segment and makes them durable per the durability mode."""

    def __init__(
        self,
        directory: str,
        durability: str,
        segments: list[Segment],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync_interval: float = 0.1,
        on_fault: Callable[[], None] | None = None,
    ) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}")
        self.directory = directory
        self.durability = durability
        self.segment_bytes = segment_bytes
        self.fsync_interval = fsync_interval
        self.on_fault = on_fault
        self.segments = segments
        self.failed: StorageError | None = None
        self.fsync_count = 0
        self.fsync_errors = 0
        self.batches = 0
        self._fsync_mode = durability == FSYNC
        self._flush_mode = durability == FLUSH
        self._buf = bytearray()  # frames of the active segment not yet written (fsync / memory modes)
        self._sealed: list[tuple[Segment, bytes]] = []  # unwritten frames of segments sealed meanwhile
        self._fut: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._idle = True
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._dirty: set[Segment] = set()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="datastore-log")
        if not segments:
            self.segments.append(self._create(1, 0))
        self.active = self.segments[-1]
        if self.active.fd < 0:
            self.active.fd = self._open(self.active.path)

    # --- setup -------------------------------------------------------------------------------------

    def _open(self, path: str) -> int:
        try:
            return fileio.open_append(path)
        except OSError as exc:
            raise _storage_error(f"opening {path}", exc) from exc

    def _create(self, major: int, minor: int) -> Segment:
        seg = Segment(self.directory, major, minor)
        seg.fd = self._open(seg.path)
        seg.dir_synced = False
        return seg

    def start(self) -> None:
        """Start the background commit (fsync) or flush task; call once inside the event loop."""
        if self._fsync_mode:
            self._task = asyncio.get_running_loop().create_task(self._commit_loop(), name="datastore-commit")
        elif self._flush_mode:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop(), name="datastore-flush")

    # --- the write path ----------------------------------------------------------------------------

    def append(self, frame: bytes) -> tuple[Segment, int]:
        """Append one frame; returns (segment, offset). In flush mode the frame has reached the OS."""
        if self.failed is not None:
            raise StorageError(str(self.failed))  # this write did not happen: not in doubt
        seg = self.active
        if seg.size >= self.segment_bytes:
            seg = self._roll()
        off = seg.size
        if self._fsync_mode:
            self._buf += frame
            seg.size = off + len(frame)
            if self._idle:
                self._idle = False
                self._wake.set()
        elif self._flush_mode:
            try:
                fileio.write(seg.fd, frame)
            except OSError as exc:
                self._undo_partial(seg, off)
                raise _storage_error(f"writing {seg.name}", exc, in_doubt=self.failed is not None) from exc
            seg.size = off + len(frame)
            self._dirty.add(seg)
        else:
            self._buf += frame
            seg.size = off + len(frame)
            if len(self._buf) >= MEMORY_BUFFER_BYTES:
                self._write_memory_buffer()
        return seg, off

    def wait(self) -> asyncio.Future[None]:
        """Future resolved when everything appended so far is durable (fsync mode's group commit)."""
        fut = self._fut
        if fut is None:
            fut = self._fut = asyncio.get_running_loop().create_future()
        return fut

    def _undo_partial(self, seg: Segment, off: int) -> None:
        """Cut a partially written frame off the file, or mark the log failed if even that fails."""
        try:
            fileio.truncate(seg.fd, off)
        except OSError as exc:
            self.failed = StorageError(f"could not truncate {seg.name} after a failed write ({exc}); "
                                       "the store must be reopened")
            log.error("%s", self.failed)

    def _roll(self) -> Segment:
        """Seal the active segment and start the next one."""
        old = self.active
        new = self._create(old.major + 1, 0)
        if self._fsync_mode:
            if self._buf:
                self._sealed.append((old, bytes(self._buf)))
                self._buf = bytearray()
        elif not self._flush_mode:
            self._write_memory_buffer()
        self.segments.append(new)
        self.active = new
        if self._flush_mode:
            self._dirty.add(new)
        return new

    def _write_memory_buffer(self) -> None:
        seg = self.active
        data, self._buf = bytes(self._buf), bytearray()
        if not data:
            return
        try:
            fileio.write(seg.fd, data)
        except OSError as exc:
            # memory mode made no promise; keep the store usable, report loudly
            self._undo_partial(seg, seg.synced)
            seg.size = seg.synced
            log.error("memory-durability log write of %d bytes to %s failed: %s", len(data), seg.name, exc)
            raise _storage_error(f"writing {seg.name}", exc, in_doubt=self.failed is not None) from exc
        seg.synced = seg.size

    # --- fsync mode: group commit ------------------------------------------------------------------

    def _take_batch(self) -> list[tuple[Segment, bytes]]:
        chunks = self._sealed
        self._sealed = []
        if self._buf:
            chunks.append((self.active, bytes(self._buf)))
            self._buf = bytearray()
        return chunks

    def _write_and_sync(self, chunks: list[tuple[Segment, bytes]]) -> None:
        """Worker thread: write the batch, fsync every file it touched (and the dir for new files)."""
        touched: list[Segment] = []
        for seg, data in chunks:
            fileio.write(seg.fd, data)
            if not touched or touched[-1] is not seg:
                touched.append(seg)
        new_file = False
        for seg in touched:
            fileio.fsync(seg.fd)
            new_file = new_file or not seg.dir_synced
        if new_file:
            fileio.fsync_dir(self.directory)

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._buf and not self._sealed:
                if self._fut is not None:  # a sync() with nothing pending
                    self._fut.set_result(None)
                    self._fut = None
                if self._closing:
                    return
                self._idle = True
                self._wake.clear()
                await self._wake.wait()
                continue
            fut, self._fut = self._fut, None
            chunks = self._take_batch()
            try:
                await loop.run_in_executor(self._io, self._write_and_sync, chunks)
            except OSError as exc:
                self._batch_failed(exc, fut)
                continue
            self.fsync_count += 1
            self.batches += 1
            for seg, data in chunks:
                seg.synced += len(data)
                seg.dir_synced = True
                if seg is not self.active and seg.fd >= 0 and seg.synced == seg.size:
                    fileio.close(seg.fd)
                    seg.fd = -1
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _batch_failed(self, exc: OSError, fut: asyncio.Future[None] | None) -> None:
        """Fail this batch and the queued one, cut the files back to their durable size, notify the engine."""
        self.fsync_errors += 1
        log.error("group commit failed, batch not acknowledged: %s", exc)
        self._buf = bytearray()
        self._sealed = []
        for seg in self.segments:
            if seg.size > seg.synced:
                seg.size = seg.synced
                if seg.fd >= 0:
                    self._undo_partial(seg, seg.synced)
        err = _storage_error("log write/fsync", exc, in_doubt=self.failed is not None)
        for f in (fut, self._fut):
            if f is not None and not f.done():
                f.set_exception(err)
                f.exception()  # mark retrieved: writers may all have been cancelled
        self._fut = None
        if self.on_fault is not None:
            self.on_fault()

    # --- flush mode: periodic fsync ----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.fsync_interval)
            if self._dirty:
                await self._sync_dirty()

    async def _sync_dirty(self) -> None:
        targets = [(seg, seg.size) for seg in self._dirty]
        self._dirty = set()
        new_file = any(not seg.dir_synced for seg, _ in targets)

        def work() -> None:
            for seg, _ in targets:
                if seg.fd >= 0:
                    fileio.fsync(seg.fd)
            if new_file:
                fileio.fsync_dir(self.directory)

        try:
            await asyncio.get_running_loop().run_in_executor(self._io, work)
        except OSError as exc:
            self.fsync_errors += 1
            self._dirty.update(seg for seg, _ in targets)
            log.error("background fsync failed (flush durability, will retry): %s", exc)
            return
        self.fsync_count += 1
        for seg, size in targets:
            seg.synced = max(seg.synced, size)
            seg.dir_synced = True
            if seg is not self.active and seg.fd >= 0 and seg.synced == seg.size:
                fileio.close(seg.fd)
                seg.fd = -1

    # --- whole-log operations ----------------------------------------------------------------------

    async def sync(self) -> None:
        """Make everything appended so far durable; raises StorageError if that fails."""
        if self.failed is not None:
            raise self.failed
        if self._fsync_mode:
            if self._buf or self._sealed or not self._idle:
                fut = self.wait()
                if self._idle:
                    self._idle = False
                    self._wake.set()
                await fut
        elif self._flush_mode:
            if self._dirty:
                await self._sync_dirty()
                if self._dirty:
                    raise StorageError("fsync failed; see the log for the cause")
        else:
            self._write_memory_buffer()
            seg = self.active
            try:
                await asyncio.get_running_loop().run_in_executor(self._io, fileio.fsync, seg.fd)
            except OSError as exc:
                raise _storage_error("fsync", exc) from exc

    def all_synced(self) -> bool:
        """True when every frame appended so far is written and fsynced (nothing buffered or pending)."""
        return not self._buf and not self._sealed and all(s.size == s.synced for s in self.segments)

    def durable_sealed(self) -> list[Segment]:
        """Sealed segments whose every byte is on disk (candidates for compaction)."""
        return [s for s in self.segments if s is not self.active and s.synced == s.size]

    def add_segment(self, seg: Segment) -> None:
        """Register a segment written elsewhere (compaction output) at its replay position."""
        bisect.insort(self.segments, seg, key=lambda s: s.order)

    def remove_segment(self, seg: Segment) -> None:
        """Forget a sealed segment and delete its file."""
        self.segments.remove(seg)
        if seg.fd >= 0:
            fileio.close(seg.fd)
            seg.fd = -1
        fileio.unlink(seg.path)

    async def run_io(self, fn: Callable[..., object], *args: object) -> object:
        """Run a blocking file function on the log's I/O thread (keeps file operations ordered)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def close(self) -> None:
        """Write and fsync everything, stop the background task, close the files."""
        err: BaseException | None = None
        try:
            if self.failed is None:
                await self.sync()
        except BaseException as exc:
            err = exc
        self._closing = True
        self._wake.set()
        if self._task is not None:
            if self._flush_mode:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._flush_mode and self._dirty and err is None:
            with contextlib.suppress(Exception):
                await self._sync_dirty()
        for seg in self.segments:
            if seg.fd >= 0:
                fileio.close(seg.fd)
                seg.fd = -1
        self._io.shutdown(wait=True)
        if err is not None:
            raise err
