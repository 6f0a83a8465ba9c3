"""Invariant checker: the in-memory index must be exactly what replaying the log gives.

Checks (each failure is one line in ``report["problems"]``):

- every entry's digest matches its (set, user_key), its packed bins decode, a cached bins dict equals them;
- per-partition record counts and per-segment live bytes equal what the index implies;
- every entry points at a segment of the log, at a valid frame of exactly its size;
- replaying every segment from disk yields the same live records (generation, expiry, bins) as the index.

Records expiring during the check are ignored. Used by the tests after every scenario and by
``datastore verify``.
"""

from __future__ import annotations

import time
from typing import Any

from . import fileio, frame
from .engine_view import EngineView
from .keys import N_PARTITIONS, compute_digest, partition_of

MAX_PROBLEMS = 100


async def verify(engine: EngineView) -> dict[str, Any]:
    """Check the engine's invariants; returns {"ok", "records", "segments", "problems"}."""
    problems: list[str] = []

    def bad(msg: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(msg)

    lg = engine.log
    if lg is not None:
        for _ in range(50):  # writers may slip in between the sync and our resumption
            await engine.sync()
            if lg.all_synced():
                break
    # from here on: no await, so the index cannot change under us
    now = time.time()
    margin = now + 1.0
    pcount = [0] * N_PARTITIONS
    seg_live: dict[int, int] = {}
    records = 0
    segs = {id(s): s for s in lg.segments} if lg is not None else {}
    for ns, d, e in engine.entries():
        records += 1
        pcount[partition_of(d)] += 1
        seg_live[id(e.seg)] = seg_live.get(id(e.seg), 0) + e.size
        if compute_digest(e.set, e.ukey) != d:
            bad(f"{ns}/{e.set}/{e.ukey!r}: digest does not match the key")
        try:
            decoded = frame.unpack(e.packed)
        except Exception as exc:
            bad(f"{ns}/{e.set}/{e.ukey!r}: packed bins do not decode: {exc}")
            continue
        if e.bins and e.bins != decoded:
            bad(f"{ns}/{e.set}/{e.ukey!r}: cached bins differ from packed bins")
        if lg is not None and id(e.seg) not in segs:
            bad(f"{ns}/{e.set}/{e.ukey!r}: points at {e.seg.name}, not a segment of the log")
    if pcount != engine.partition_counts():
        bad("per-partition record counts differ from the index")
    if lg is not None:
        for s in lg.segments:
            if seg_live.get(id(s), 0) != s.live:
                bad(f"{s.name}: live bytes {s.live} but index entries hold {seg_live.get(id(s), 0)}")
        _check_against_disk(engine, now, margin, bad)
    return {"ok": not problems, "records": records,
            "segments": len(lg.segments) if lg is not None else 0, "problems": problems}


def _check_against_disk(engine: EngineView, now: float, margin: float, bad: Any) -> None:
    lg = engine.log
    assert lg is not None
    disk: dict[tuple[str, bytes], tuple[int, Any, bytes]] = {}
    datas: dict[int, bytes] = {}
    for s in lg.segments:
        try:
            data = fileio.read_file(s.path)[: s.size]
        except OSError as exc:
            bad(f"{s.name}: unreadable: {exc}")
            continue
        datas[id(s)] = data
        end = 0
        for off, size, f in frame.iter_frames(data):
            kind, ns, _set, _uk, d, gen, exp, pb = f
            end = off + size
            if kind == frame.PUT and (exp is None or exp > now):
                disk[(ns, d)] = (gen, exp, pb)
            else:
                disk.pop((ns, d), None)
        if end != len(data):
            bad(f"{s.name}: bad frame at offset {end}")
    for ns, d, e in engine.entries():
        if e.exp is not None and e.exp <= margin:
            disk.pop((ns, d), None)
            continue
        got = disk.pop((ns, d), None)
        where = f"{ns}/{e.set}/{e.ukey!r}"
        if got is None:
            bad(f"{where}: in the index but not live in the log")
        elif got != (e.gen, e.exp, e.packed):
            bad(f"{where}: index has generation {e.gen}, log has {got[0]} (or bins/expiry differ)")
        data = datas.get(id(e.seg))
        if data is not None and frame.check_at(data, e.off, len(data)) != e.size:
            bad(f"{where}: no valid frame of {e.size} bytes at {e.seg.name}:{e.off}")
    for (ns, _d), (gen, exp, _pb) in disk.items():
        if exp is None or exp > margin:
            bad(f"{ns}: a live record (generation {gen}) in the log is missing from the index")
