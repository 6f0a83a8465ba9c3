"""File store persistence: reopen, durability modes, rollover, recovery, corruption, repair, locking, URLs."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from datastore import (
    CorruptLogError,
    DatastoreError,
    Key,
    open_store,
    ops,
)
from datastore.errors import InvalidURLError, StoreLockedError
from datastore.recovery import repair

NS, SET = "p", "s"
VALUES = {"i": 7, "f": -0.5, "s": "ü", "b": b"\x00", "t": False, "l": [1, [2, "3"]], "d": {"k": [None]}}


def key(i: Any) -> Key:
    return Key(NS, SET, i)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


async def write_workload(store: Any) -> dict[Any, tuple[int, dict[str, Any]] | None]:
    """A mix of writes; returns the expected state (generation, bins) per user key."""
    expected: dict[Any, tuple[int, dict[str, Any]] | None] = {}
    for i in range(60):
        gen = await store.put(key(i), {**VALUES, "n": i})
        expected[i] = (gen, {**VALUES, "n": i})
    for i in range(0, 60, 3):
        gen = await store.put(key(i), {"n": None, "m": i})
        bins = {**VALUES, "m": i}
        expected[i] = (gen, bins)
    for i in range(1, 60, 5):
        await store.delete(key(i))
        expected[i] = None
    for i in range(2, 60, 7):
        rec = await store.operate(key(i), [ops.incr("cnt", 2), ops.append("l", i)])
        old = expected[i]
        bins = old[1] if old is not None else {}
        expected[i] = (rec.generation, {**bins, "cnt": 2, "l": [*bins.get("l", []), i]})
    rec = await store.cas(key("c"), lambda b: {"c": 1})
    expected["c"] = (rec.generation, {"c": 1})
    return expected


async def assert_state(store: Any, expected: dict[Any, Any]) -> None:
    recs = await store.get_many([key(k) for k in expected])
    for (k, want), rec in zip(expected.items(), recs, strict=True):
        got = None if rec is None else (rec.generation, rec.bins)
        assert got == want, f"key {k!r}"


@pytest.mark.parametrize("durability", ["fsync", "flush", "memory"])
async def test_reopen_sees_every_acknowledged_write(open_file_store: Any, durability: str) -> None:
    store = await open_file_store(durability)
    expected = await write_workload(store)
    await store.close()
    store = await open_file_store(durability)
    await assert_state(store, expected)
    assert (await store.verify())["ok"]
    # and again after writing more on top of the recovered log
    await store.put(key(1), {"back": 1})
    expected[1] = (1, {"back": 1})
    await store.close()
    store = await open_file_store(durability)
    await assert_state(store, expected)


async def test_flush_durability_reaches_the_os_before_ack(open_file_store: Any, tmp_path: Path) -> None:
    store = await open_file_store("flush")
    await store.put(key(1), {"a": 1})
    size = sum(p.stat().st_size for p in segments(tmp_path / "db"))
    assert size > 0  # already in the file, no close needed
    await store.close()


async def test_fsync_group_commit_shares_fsyncs(open_file_store: Any) -> None:
    store = await open_file_store("fsync")
    await asyncio.gather(*(store.put(key(i), {"i": i}) for i in range(300)))
    st = store.stats()
    assert st["puts"] == 300 and st["fsyncs"] < 100


async def test_segments_roll_over_and_replay_in_order(open_file_store: Any, tmp_path: Path) -> None:
    store = await open_file_store("fsync", segment_bytes=4096, compact_interval=0)
    for rnd in range(5):
        await asyncio.gather(*(store.put(key(i), {"i": i, "r": rnd, "pad": "x" * 50}) for i in range(40)))
    assert len(segments(tmp_path / "db")) > 3
    await store.close()
    store = await open_file_store("fsync", segment_bytes=4096, compact_interval=0)
    recs = await store.get_many([key(i) for i in range(40)])
    assert all(r.bins["r"] == 4 and r.generation == 5 for r in recs)


async def test_tombstones_survive_restart(open_file_store: Any) -> None:
    store = await open_file_store("flush")
    await store.put(key("x"), {"a": 1})
    await store.delete(key("x"))
    await store.close()
    store = await open_file_store("flush")
    assert await store.get(key("x")) is None


async def test_expired_records_stay_gone_after_restart(open_file_store: Any) -> None:
    store = await open_file_store("fsync")
    await store.put(key("old"), {"a": 1})
    await store.put(key("old"), {"a": 2}, ttl=0.1)
    await store.put(key("live"), {"a": 3}, ttl=60)
    await asyncio.sleep(0.15)
    await store.close()
    store = await open_file_store("fsync")
    assert await store.get(key("old")) is None
    rec = await store.get(key("live"))
    assert rec.bins == {"a": 3} and rec.expires_at is not None


async def test_torn_tail_is_truncated_with_a_warning(open_file_store: Any, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    store = await open_file_store("fsync")
    for i in range(10):
        await store.put(key(i), {"i": i, "pad": "y" * 100})
    await store.close()
    last = segments(tmp_path / "db")[-1]
    size = last.stat().st_size
    os.truncate(last, size - 40)  # cut the last frame
    with caplog.at_level(logging.WARNING, logger="datastore.recovery"):
        store = await open_file_store("fsync")
    assert "torn tail" in caplog.text
    recs = await store.get_many([key(i) for i in range(10)])
    assert [r is not None for r in recs] == [True] * 9 + [False]
    assert await store.put(key(9), {"again": 1}) == 1
    await store.close()
    store = await open_file_store("fsync")
    assert (await store.get(key(9))).bins == {"again": 1}


async def test_garbage_appended_to_tail_is_truncated(open_file_store: Any, tmp_path: Path) -> None:
    store = await open_file_store("fsync")
    await store.put(key(1), {"a": 1})
    await store.close()
    last = segments(tmp_path / "db")[-1]
    last.write_bytes(last.read_bytes() + b"\xd5\x10\x00")
    store = await open_file_store("fsync")
    assert (await store.get(key(1))).bins == {"a": 1}


async def test_flipped_byte_names_file_and_offset_and_repair_keeps_good_records(
    open_file_store: Any, tmp_path: Path
) -> None:
    store = await open_file_store("fsync")
    for i in range(100):
        await store.put(key(i), {"i": i, "pad": "z" * 80})
    await store.close()
    seg = segments(tmp_path / "db")[-1]
    data = bytearray(seg.read_bytes())
    pos = len(data) // 2
    data[pos] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as info:
        await open_file_store("fsync")
    err = info.value
    assert err.code == "corrupt_log" and seg.name in str(err)
    assert err.path == str(seg) and pos - 200 < err.offset <= pos
    assert f"offset {err.offset}" in str(err)

    report = repair(str(tmp_path / "db"))
    assert len(report["repaired"]) == 1 and report["bytes_dropped"] > 0
    store = await open_file_store("fsync")
    recs = await store.get_many([key(i) for i in range(100)])
    lost = [i for i, r in enumerate(recs) if r is None]
    assert len(lost) == 1
    assert all(r.bins["i"] == i for i, r in enumerate(recs) if r is not None)
    assert (await store.verify())["ok"]


def test_repair_of_a_healthy_store_changes_nothing(tmp_path: Path) -> None:
    async def fill() -> None:
        s = await open_store(f"file://{tmp_path}?durability=flush")
        for i in range(20):
            await s.put(key(i), {"i": i})
        await s.close()

    asyncio.run(fill())
    before = {p.name: p.read_bytes() for p in segments(tmp_path)}
    report = repair(str(tmp_path))
    assert report["repaired"] == [] and report["frames_kept"] == 20
    assert {p.name: p.read_bytes() for p in segments(tmp_path)} == before


async def test_a_second_open_of_the_same_directory_is_refused(open_file_store: Any) -> None:
    await open_file_store("fsync")
    with pytest.raises(StoreLockedError) as info:
        await open_file_store("fsync")
    assert info.value.code == "locked"


async def test_leftover_temp_files_are_removed_at_open(open_file_store: Any, tmp_path: Path) -> None:
    store = await open_file_store("fsync")
    await store.close()
    junk = tmp_path / "db" / "0000000001-0001.log.tmp"
    junk.write_bytes(b"partial compaction output")
    store = await open_file_store("fsync")
    assert not junk.exists()


async def test_memory_store_writes_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = await open_store("memory://")
    await s.put(key(1), {"a": 1})
    await s.close()
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240


async def test_relative_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = await open_store("file://./rel/db?durability=flush")
    await s.put(key(1), {"a": 1})
    await s.close()
    assert segments(tmp_path / "rel" / "db")


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "nonsense", "file://", "file:///", "file://host/dir", "memory://?durability=fsync",
     "file:///tmp/x?durability=sometimes", "file:///tmp/x?bogus=1", "file:///tmp/x?max_record_bytes=abc",
     "memory://?max_record_bytes=0", "memory://somewhere"],
)
async def test_bad_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        await open_store(url)
    assert isinstance(info.value, DatastoreError) and info.value.code == "bad_url"
