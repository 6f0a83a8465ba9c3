"""Compaction: reclaims dead bytes, keeps every live record and every needed tombstone, tolerates
concurrent writes and crashes at any step."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path
from typing import Any

from datastore import Key

NS, SET = "c", "s"
SMALL = {"segment_bytes": 4096, "compact_interval": 0}


def key(i: Any) -> Key:
    return Key(NS, SET, i)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


async def snapshot(store: Any) -> dict[Any, tuple[int, dict[str, Any]]]:
    return {r.key.user_key: (r.generation, r.bins) async for r in store.scan(NS, SET)}


async def test_compaction_reclaims_dead_bytes_and_keeps_live_records(open_file_store: Any) -> None:
    store = await open_file_store("fsync", **SMALL)
    for rnd in range(10):
        await asyncio.gather(*(store.put(key(i), {"i": i, "r": rnd, "pad": "p" * 60}) for i in range(30)))
    before = await snapshot(store)
    bytes_before = store.stats()["log_bytes"]
    report = await store.compact()
    assert report["inputs"] and store.stats()["log_bytes"] < bytes_before / 2
    assert await snapshot(store) == before
    assert (await store.verify())["ok"]
    await store.close()
    store = await open_file_store("fsync", **SMALL)
    assert await snapshot(store) == before


async def test_compact_with_nothing_to_do_is_a_no_op(open_file_store: Any) -> None:
    store = await open_file_store("fsync", **SMALL)
    await store.put(key(1), {"a": 1})
    assert (await store.compact())["inputs"] == []


async def test_tombstone_is_kept_while_an_older_segment_holds_the_key(
    open_file_store: Any, tmp_path: Path
) -> None:
    store = await open_file_store("fsync", **SMALL)
    await store.put(key("victim"), {"v": 1})
    for i in range(40):  # live data keeps the first segment from being compacted
        await store.put(key(i), {"i": i, "pad": "q" * 80})
    await store.delete(key("victim"))
    for _rnd in range(3):  # dead data around the tombstone
        for i in range(40, 60):
            await store.put(key(i), {"i": i, "pad": "q" * 80})
    first = segments(tmp_path / "db")[0]
    report = await store.compact()
    assert report["inputs"] and first.name not in report["inputs"] and first.exists()
    assert await store.get(key("victim")) is None
    assert (await store.verify())["ok"]
    await store.close()
    store = await open_file_store("fsync", **SMALL)
    assert await store.get(key("victim")) is None
    # compacting everything (the old put included) still never resurrects it
    for _ in range(5):
        await store.compact(force=True)
    await store.close()
    store = await open_file_store("fsync", **SMALL)
    assert await store.get(key("victim")) is None
    assert (await store.get(key(3))).bins["i"] == 3


async def test_expired_version_does_not_uncover_an_older_one_after_compaction(open_file_store: Any) -> None:
    store = await open_file_store("fsync", **SMALL)
    await store.put(key("t"), {"v": "forever"})
    for i in range(40):
        await store.put(key(i), {"i": i, "pad": "q" * 80})
    await store.put(key("t"), {"v": "short"}, ttl=0.1)
    for _rnd in range(3):
        for i in range(40, 60):
            await store.put(key(i), {"i": i, "pad": "q" * 80})
    await asyncio.sleep(0.15)
    await store.compact()
    await store.close()
    store = await open_file_store("fsync", **SMALL)
    assert await store.get(key("t")) is None


async def test_compaction_with_concurrent_writes_loses_nothing(open_file_store: Any) -> None:
    store = await open_file_store("fsync", **SMALL)
    model: dict[int, tuple[int, dict[str, Any]] | None] = {}
    rng = random.Random(7)
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        for n in range(400):
            if stop.is_set() and n > 100:
                return
            i = w * 20 + rng.randrange(20)
            if rng.random() < 0.15:
                if await store.delete(key(i)):
                    model[i] = None
            else:
                bins = {"w": w, "n": n, "pad": "x" * rng.randrange(10, 120)}
                gen = await store.put(key(i), bins, exists="replace" if model.get(i) else "upsert")
                model[i] = (gen, bins)

    async def compactor() -> int:
        done = 0
        for _ in range(200):
            if stop.is_set():
                break
            if (await store.compact())["inputs"]:
                done += 1
            await asyncio.sleep(0.002)
        return done

    comp = asyncio.create_task(compactor())
    await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(5))), 60)
    stop.set()
    assert await comp > 0
    assert (await store.verify())["ok"]
    expected = {i: s for i, s in model.items() if s is not None}
    assert await snapshot(store) == expected
    await store.close()
    store = await open_file_store("fsync", **SMALL)
    assert await snapshot(store) == expected
    assert (await store.verify())["ok"]


async def test_crash_after_output_written_but_before_inputs_removed(
    open_file_store: Any, tmp_path: Path
) -> None:
    """Both the compaction output and its inputs on disk (crash between rename and unlink): same data."""
    store = await open_file_store("fsync", **SMALL)
    for rnd in range(6):
        for i in range(25):
            await store.put(key(i), {"i": i, "r": rnd, "pad": "z" * 70})
        await store.delete(key(rnd))
    expected = await snapshot(store)
    saved = tmp_path / "saved"
    saved.mkdir()
    for p in segments(tmp_path / "db"):
        shutil.copy(p, saved / p.name)
    assert (await store.compact())["inputs"]
    await store.close()
    for p in saved.iterdir():
        if not (tmp_path / "db" / p.name).exists():
            shutil.copy(p, tmp_path / "db" / p.name)  # the "crash": inputs never unlinked
    store = await open_file_store("fsync", **SMALL)
    assert await snapshot(store) == expected
    assert (await store.verify())["ok"]
    await store.compact(force=True)
    assert await snapshot(store) == expected
    await store.close()
    store = await open_file_store("fsync", **SMALL)
    assert await snapshot(store) == expected


async def test_background_compaction_runs_by_threshold(open_file_store: Any) -> None:
    store = await open_file_store("flush", segment_bytes=4096, compact_interval=0.05)
    for rnd in range(8):
        for i in range(20):
            await store.put(key(i), {"r": rnd, "pad": "b" * 80})
    for _ in range(100):  # up to 5 s
        if store.stats()["compactions"]:
            break
        await asyncio.sleep(0.05)
    assert store.stats()["compactions"] >= 1
    assert all(r.bins["r"] == 7 for r in await store.get_many([key(i) for i in range(20)]))
