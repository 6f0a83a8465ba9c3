"""Disk faults injected through ``datastore.fileio``: a failed write is never acknowledged, nothing
acknowledged is lost, and the store works again once the fault clears."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from datastore import Key, StorageError, fileio, ops

NS, SET = "f", "s"


def key(i: Any) -> Key:
    return Key(NS, SET, i)


async def reopen_and_check(store: Any, opener: Any, expected: dict[Any, Any], **opts: Any) -> Any:
    assert (await store.verify())["ok"]
    await store.close()
    store = await opener(**opts)
    for k, want in expected.items():
        rec = await store.get(key(k))
        assert (None if rec is None else (rec.generation, rec.bins)) == want, k
    assert (await store.verify())["ok"]
    return store


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
async def test_flush_write_fault_fails_the_write_and_changes_nothing(open_file_store: Any, code: int) -> None:
    store = await open_file_store("flush")
    await store.put(key(1), {"v": 1})
    with fileio.fault("write", code):
        with pytest.raises(StorageError) as info:
            await store.put(key(1), {"v": 2})
        assert info.value.code == "io_error" and "injected" in str(info.value)
        assert info.value.in_doubt is False  # the partial frame was cut off again: certainly not applied
        with pytest.raises(StorageError):
            await store.delete(key(1))
        with pytest.raises(StorageError):
            await store.operate(key(2), [ops.incr("n", 1)])
    rec = await store.get(key(1))
    assert (rec.generation, rec.bins) == (1, {"v": 1})
    assert await store.get(key(2)) is None
    assert await store.put(key(1), {"v": 3}) == 2
    await reopen_and_check(store, open_file_store, {1: (2, {"v": 3}), 2: None}, durability="flush")


@pytest.mark.parametrize(
    ("kind", "code"), [("fsync", errno.EIO), ("write", errno.ENOSPC), ("fsync", errno.ENOSPC)]
)
async def test_fsync_mode_fault_fails_the_whole_batch_and_reverts_it(
    open_file_store: Any, kind: str, code: int
) -> None:
    store = await open_file_store("fsync")
    for i in range(10):
        await store.put(key(i), {"v": 0})
    with fileio.fault(kind, code):
        writes = [store.put(key(i), {"v": 1}) for i in range(10)]
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results), results
        assert [r.in_doubt for r in results] == [False] * 10  # the batch was cut off the log
        with pytest.raises(StorageError):
            await store.cas(key(0), lambda b: {"v": 9})
    recs = await store.get_many([key(i) for i in range(10)])
    assert all((r.generation, r.bins) == (1, {"v": 0}) for r in recs)  # unacknowledged writes reverted
    assert store.stats()["reloads"] >= 1
    assert await store.put(key(0), {"v": 2}) == 2
    expected = {0: (2, {"v": 2}), **{i: (1, {"v": 0}) for i in range(1, 10)}}
    await reopen_and_check(store, open_file_store, expected)


async def test_one_failed_fsync_then_recovery_without_clearing(open_file_store: Any) -> None:
    store = await open_file_store("fsync")
    await store.put(key(1), {"v": 1})
    fileio.set_fault("fsync", errno.EIO, count=1)
    with pytest.raises(StorageError):
        await store.put(key(1), {"v": 2})
    assert await store.put(key(1), {"v": 3}) == 2  # the fault was one-shot
    await reopen_and_check(store, open_file_store, {1: (2, {"v": 3})})


async def test_fault_while_opening_the_next_segment(open_file_store: Any) -> None:
    store = await open_file_store("fsync", segment_bytes=4096, compact_interval=0)
    written = {}
    for i in range(30):
        written[i] = (await store.put(key(i), {"pad": "x" * 100}), {"pad": "x" * 100})
    failures = 0
    with fileio.fault("open", errno.EMFILE):
        for i in range(30, 80):
            try:
                written[i] = (await store.put(key(i), {"pad": "x" * 100}), {"pad": "x" * 100})
            except StorageError:
                failures += 1
                written[i] = None
    assert failures > 0
    await store.put(key("after"), {"ok": 1})
    await reopen_and_check(store, open_file_store, written, segment_bytes=4096, compact_interval=0)


async def test_compaction_fault_loses_nothing(open_file_store: Any) -> None:
    store = await open_file_store("fsync", segment_bytes=4096, compact_interval=0)
    for rnd in range(6):
        for i in range(20):
            await store.put(key(i), {"r": rnd, "pad": "c" * 80})
            if rnd == 0 and i % 2:
                await store.put(key(f"static{i}"), {"s": i})  # live data in the oldest segments
    expected: dict[Any, Any] = {i: (6, {"r": 5, "pad": "c" * 80}) for i in range(20)}
    expected.update({f"static{i}": (1, {"s": i}) for i in range(1, 20, 2)})
    for kind in ("write", "fsync", "rename"):
        with fileio.fault(kind, errno.EIO), pytest.raises(StorageError):
            await store.compact(force=True)
        assert (await store.verify())["ok"]
    assert (await store.compact())["inputs"]
    await reopen_and_check(store, open_file_store, expected, segment_bytes=4096, compact_interval=0)


async def test_failed_truncate_after_failed_write_stops_writes_until_reopen(open_file_store: Any) -> None:
    store = await open_file_store("flush")
    await store.put(key(1), {"v": 1})
    with fileio.fault("write", errno.EIO), fileio.fault("truncate", errno.EIO):
        with pytest.raises(StorageError) as info:
            await store.put(key(1), {"v": 2})
    assert info.value.in_doubt is True  # its bytes may still be in the file
    with pytest.raises(StorageError, match="reopen") as info:
        await store.put(key(1), {"v": 3})
    assert info.value.in_doubt is False  # refused before anything was written
    assert (await store.get(key(1))).bins == {"v": 1}  # reads keep working
    await store.close()
    store = await open_file_store("flush")
    rec = await store.get(key(1))
    assert (rec.generation, rec.bins) == (1, {"v": 1})
    assert await store.put(key(1), {"v": 4}) == 2


async def test_background_fsync_fault_in_flush_mode_is_counted_and_retried(open_file_store: Any) -> None:
    store = await open_file_store("flush", fsync_interval=0.01)
    with fileio.fault("fsync", errno.EIO):
        await store.put(key(1), {"v": 1})
        for _ in range(100):  # up to 1 s
            if store.stats()["fsync_errors"]:
                break
            await asyncio.sleep(0.01)
        assert store.stats()["fsync_errors"] >= 1
    await store.put(key(2), {"v": 2})
    await reopen_and_check(store, open_file_store, {1: (1, {"v": 1}), 2: (1, {"v": 2})}, durability="flush")


def test_fault_hook_is_validated_and_cleared() -> None:
    with pytest.raises(ValueError):
        fileio.set_fault("chmod")
    fileio.set_fault("write", errno.ENOSPC, count=2)
    fileio.clear_faults()
    assert not fileio._faults
