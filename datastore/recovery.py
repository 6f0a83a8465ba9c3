"""Replay of segments at open, torn-tail truncation, corruption reports, and repair.

Rules for a frame that fails its checks at offset ``p`` of a segment:

- last segment and no valid frame anywhere after ``p``: a torn tail (a crash mid-write). It is truncated
  away with a logged warning; nothing after it was ever acknowledged.
- anywhere else: ``CorruptLogError`` naming the file and offset. ``repair()`` (CLI ``datastore repair``)
  rewrites damaged segments keeping every frame that still checks out (resyncing on the frame magic).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from xxhash import xxh3_64_intdigest

from . import fileio
from .errors import CorruptLogError, StorageError
from .frame import HEADER, HEADER_SIZE, MAGIC, check_at, resync
from .frame import unpack as frame_unpack
from .logstore import Segment, list_segments

log = logging.getLogger("datastore.recovery")

Apply = Callable[[Segment, int, int, list[Any]], None]


def _read(seg: Segment) -> bytes:
    try:
        return fileio.read_file(seg.path)
    except OSError as exc:
        raise StorageError(f"reading {seg.path} failed: {exc}") from exc


def _describe(data: bytes, pos: int) -> str:
    if len(data) - pos < HEADER_SIZE:
        return f"{len(data) - pos} stray bytes"
    if data[pos] != MAGIC:
        return f"bad frame marker 0x{data[pos]:02x}"
    return "checksum or length mismatch"


def _replay_frames(seg: Segment, data: bytes, apply: Apply) -> tuple[int, int]:
    """The hot loop of recovery (iter_frames inlined); returns (end of the valid frames, frame count)."""
    end = len(data)
    unpack_header, checksum, unpack = HEADER.unpack_from, xxh3_64_intdigest, frame_unpack
    pos = 0
    n_frames = 0
    while end - pos >= HEADER_SIZE:
        magic, n, csum = unpack_header(data, pos)
        start = pos + HEADER_SIZE
        stop = start + n
        if magic != MAGIC or stop > end:
            break
        body = data[start:stop]
        if checksum(body, n) != csum:
            break
        apply(seg, pos, HEADER_SIZE + n, unpack(body))
        n_frames += 1
        pos = stop
    return pos, n_frames


def replay(segments: list[Segment], apply: Apply, *, fix_tail: bool = True) -> int:
    """Feed every frame of every segment, in order, to ``apply(seg, offset, size, fields)``.

    Returns the number of frames. Truncates a torn tail of the last segment when ``fix_tail`` (else raises
    CorruptLogError for it too). Sets each segment's ``size``/``synced`` to its valid length.
    """
    count = 0
    last = segments[-1] if segments else None
    for seg in segments:
        data = _read(seg)
        pos, n = _replay_frames(seg, data, apply)
        count += n
        end = len(data)
        if pos < end:
            torn = seg is last and resync(data, pos, end) == -1
            if not (torn and fix_tail):
                raise CorruptLogError(
                    f"corrupt log: {seg.path} at offset {pos}: {_describe(data, pos)} "
                    f"(run `datastore repair --store URL` to keep every good record)",
                    seg.path,
                    pos,
                )
            log.warning("torn tail in %s: truncating %d bytes at offset %d (an unacknowledged write)",
                        seg.path, end - pos, pos)
            try:
                fileio.truncate_path(seg.path, pos)
            except OSError as exc:
                raise StorageError(f"truncating the torn tail of {seg.path} failed: {exc}") from exc
        seg.size = seg.synced = pos
    return count


def scan_damage(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split a segment's bytes into good frame ranges and bad ranges, as (start, end) lists."""
    good: list[tuple[int, int]] = []
    bad: list[tuple[int, int]] = []
    pos, end = 0, len(data)
    while pos < end:
        n = check_at(data, pos, end)
        if n > 0:
            good.append((pos, pos + n))
            pos += n
            continue
        nxt = resync(data, pos, end)
        stop = end if nxt == -1 else nxt
        bad.append((pos, stop))
        pos = stop
    return good, bad


def repair(directory: str) -> dict[str, Any]:
    """Rewrite every damaged segment with only its good frames (write + fsync + rename).

    Safe to run on a healthy store (it changes nothing). The store must not be open.
    """
    report: dict[str, Any] = {"segments": 0, "repaired": [], "frames_kept": 0, "bytes_dropped": 0}
    for seg in list_segments(directory):
        report["segments"] += 1
        data = _read(seg)
        good, bad = scan_damage(data)
        report["frames_kept"] += len(good)
        if not bad:
            continue
        dropped = sum(b - a for a, b in bad)
        report["bytes_dropped"] += dropped
        report["repaired"].append({"file": seg.name, "bad_ranges": bad, "bytes_dropped": dropped})
        log.warning("repair: %s: dropping %d bad bytes in %d ranges", seg.path, dropped, len(bad))
        tmp = seg.path + ".tmp"
        fd = fileio.open_new(tmp)
        try:
            fileio.write(fd, b"".join(data[a:b] for a, b in good))
            fileio.fsync(fd)
        finally:
            fileio.close(fd)
        fileio.rename(tmp, seg.path)
        fileio.fsync_dir(directory)
    return report


def remove_temp_files(directory: str) -> None:
    """Delete leftovers of an interrupted compaction or repair (never referenced by replay)."""
    for name in fileio.listdir(directory):
        if name.endswith(".tmp"):
            fileio.unlink(os.path.join(directory, name))
