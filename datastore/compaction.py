"""Compaction (defrag): rewrite the live records of mostly-dead sealed segments into one new segment.

Crash safety comes from the order of operations and from replay order:

1. the output is written to ``<name>.tmp`` (ignored and deleted by recovery), then fsynced;
2. it is renamed to ``<major of newest input>-<next minor>.log``: it replays after all its inputs and
   before every segment written later, so a crash with both inputs and output present replays the same
   versions twice (harmless), and writes made during compaction (in the newer active segment) win;
3. the directory is fsynced, then the inputs are unlinked.

Liveness is decided frame by frame on the event loop, in chunks with awaits in between, so writers keep
going: a record overwritten after being copied leaves a dead copy in the output, never a stale winner.
A tombstone (or an expired version, rewritten as a tombstone) is kept while any older segment outside the
compaction set exists, since that segment may hold an earlier version of the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import fileio, frame
from .engine_view import EngineView, Entry
from .errors import StorageError
from .logstore import Segment

log = logging.getLogger("datastore.compaction")

CHUNK_FRAMES = 2000
CHUNK_BYTES = 1 << 20
MAX_INPUTS = 32


def candidates(engine: EngineView, force: bool = False) -> list[Segment]:
    """Sealed, fully durable segments worth rewriting, oldest first."""
    lg = engine.log
    if lg is None:
        return []
    oldest = lg.segments[0]
    threshold = engine.compact_threshold
    out = []
    for s in lg.durable_sealed():
        useful = s.live + (0 if s is oldest else s.tomb)  # the oldest segment's tombstones can all go
        if s.size == 0 or useful < s.size * threshold or (force and useful < s.size):
            out.append(s)
    return out[:MAX_INPUTS]


async def compact(engine: EngineView, *, force: bool = False) -> dict[str, Any]:
    """One compaction round; returns a report (``inputs``, ``output``, byte counts); no-op if none due."""
    lg = engine.log
    report: dict[str, Any] = {"inputs": [], "output": None, "bytes_before": 0, "bytes_after": 0}
    if lg is None:
        return report
    async with engine.compact_lock:
        cands = candidates(engine, force)
        if not cands or engine.closed:
            return report
        epoch = engine.epoch
        loop = asyncio.get_running_loop()
        inputs = set(cands)
        newest = max(cands, key=lambda s: s.order)
        minor = max(s.minor for s in lg.segments if s.major == newest.major) + 1
        out = Segment(lg.directory, newest.major, minor)
        tmp = out.path + ".tmp"
        moved: list[tuple[Entry, str, bytes, int]] = []
        out_size = 0
        out_tomb = 0
        try:
            fd = await loop.run_in_executor(None, fileio.open_new, tmp)
        except OSError as exc:
            raise StorageError(f"compaction could not create {tmp}: {exc}") from exc
        ok = False
        try:
            for s in sorted(cands, key=lambda s: s.order):
                keep_tombs = any(t not in inputs and t.order < s.order for t in lg.segments)
                data = await loop.run_in_executor(None, fileio.read_file, s.path)
                data = data[: s.size]
                chunk = bytearray()
                now = time.time()
                for n, (off, size, f) in enumerate(frame.iter_frames(data), 1):
                    kind, ns, set_name, ukey, d, gen, exp, _ = f
                    e = engine.entry(ns, d)
                    if e is not None and e.seg is s and e.off == off:
                        if e.exp is not None and e.exp <= now:
                            engine.expire(ns, d, e)
                            e = None
                        else:
                            moved.append((e, ns, d, out_size))
                            chunk += data[off : off + size]
                            out_size += size
                    if e is None and keep_tombs and (kind == frame.DEL or (exp is not None and exp <= now)):
                        t = data[off : off + size] if kind == frame.DEL else frame.encode_del(
                            ns, set_name, ukey, d, gen)
                        chunk += t
                        out_size += len(t)
                        out_tomb += len(t)
                    if n % CHUNK_FRAMES == 0 or len(chunk) >= CHUNK_BYTES:
                        await loop.run_in_executor(None, fileio.write, fd, bytes(chunk))
                        chunk = bytearray()
                        if engine.epoch != epoch:
                            return report
                        now = time.time()
                if chunk:
                    await loop.run_in_executor(None, fileio.write, fd, bytes(chunk))
                report["inputs"].append(s.name)
                report["bytes_before"] += s.size
            if out_size:
                await loop.run_in_executor(None, fileio.fsync, fd)
            fileio.close(fd)
            fd = -1
            if out_size:
                await loop.run_in_executor(None, fileio.rename, tmp, out.path)
                await loop.run_in_executor(None, fileio.fsync_dir, lg.directory)
                if engine.epoch != epoch:  # index rebuilt meanwhile: undo, the inputs hold everything
                    await loop.run_in_executor(None, fileio.unlink, out.path)
                    return report
                ok = True
            elif engine.epoch != epoch:
                return report
        except OSError as exc:
            raise StorageError(f"compaction failed, nothing changed: {exc}") from exc
        finally:
            if fd >= 0:
                fileio.close(fd)
            if not ok:
                try:
                    fileio.unlink(tmp)
                except OSError as exc:
                    log.error("could not remove %s: %s", tmp, exc)
        # switch over: no await from here until the inputs are gone from the in-memory log
        out.size = out.synced = out_size
        out.tomb = out_tomb
        if out_size:
            lg.add_segment(out)
        for e, ns, d, new_off in moved:
            engine.relocate(ns, d, e, out, new_off)
        removed = []
        for s in cands:
            if s.live != 0:
                log.error("compaction: %s still has %d live bytes; keeping it", s.name, s.live)
                continue
            try:
                lg.remove_segment(s)
                removed.append(s.name)
            except OSError as exc:  # harmless: its records replay before the output's
                log.error("compaction: could not remove %s: %s", s.path, exc)
        try:
            await loop.run_in_executor(None, fileio.fsync_dir, lg.directory)
        except OSError as exc:
            log.error("compaction: directory fsync failed: %s", exc)
        engine.count_compaction()
        report.update(output=out.name if out_size else None, bytes_after=out_size, removed=removed)
        log.info("compacted %s into %s (%d -> %d bytes)", report["inputs"], out.name,
                 report["bytes_before"], out_size)
        return report
