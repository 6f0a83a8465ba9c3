"""The public API on every backend: reads, writes, policies, operate, cas, TTL, validation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from datastore import (
    DatastoreError,
    GenerationError,
    InvalidBinError,
    InvalidKeyError,
    Key,
    Record,
    RecordExistsError,
    RecordNotFoundError,
    RecordTooBigError,
    StoreClosedError,
    ops,
)

K = Key("test", "players", "alice")


def key(i: Any) -> Key:
    return Key("test", "players", i)


# --- keys ------------------------------------------------------------------------------------------


def test_key_exposes_digest_and_partition() -> None:
    k = Key("ns", "set", 42)
    assert len(k.digest) == 16
    assert k.partition == int.from_bytes(k.digest, "big") % 4096
    assert (k.namespace, k.set, k.user_key) == ("ns", "set", 42)


def test_key_types_are_distinct_records() -> None:
    digests = {Key("ns", "s", 1).digest, Key("ns", "s", "1").digest, Key("ns", "s", b"1").digest}
    assert len(digests) == 3
    assert Key("ns", "s", 1).digest != Key("ns", "t", 1).digest


def test_key_is_immutable_and_hashable() -> None:
    k = Key("ns", "s", "a")
    with pytest.raises(AttributeError):
        k.user_key = "b"  # type: ignore[misc]
    assert k == Key("ns", "s", "a") and hash(k) == hash(Key("ns", "s", "a"))
    assert k != Key("other", "s", "a")


@pytest.mark.parametrize(
    "args",
    [("", "s", 1), ("ns", "", 1), (1, "s", 1), ("ns", None, 1), ("ns", "s", True), ("ns", "s", 1.5),
     ("ns", "s", None), ("ns", "s", 2**63), ("ns", "s", ["a"])],
)
def test_bad_keys_are_rejected(args: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidKeyError) as info:
        Key(*args)
    assert info.value.code == "bad_key"


# --- put / get / delete ----------------------------------------------------------------------------


async def test_get_absent_returns_none(store: Any) -> None:
    assert await store.get(K) is None


async def test_put_then_get_roundtrips_every_value_type(store: Any) -> None:
    bins = {"i": -(2**63), "u": 2**64 - 1, "f": 1.5, "s": "é✓", "b": b"\x00\xff", "t": True,
            "l": [1, "x", [b"y", 2.5]], "d": {"a": {"b": [None, False]}}}
    assert await store.put(K, bins) == 1
    rec = await store.get(K)
    assert isinstance(rec, Record)
    assert rec.key == K and rec.bins == bins and rec.generation == 1 and rec.expires_at is None


async def test_put_merges_bins_and_none_removes_a_bin(store: Any) -> None:
    await store.put(K, {"a": 1, "b": 2})
    assert await store.put(K, {"b": None, "c": 3}) == 2
    rec = await store.get(K)
    assert rec.bins == {"a": 1, "c": 3} and rec.generation == 2


async def test_returned_bins_are_the_callers_to_mutate(store: Any) -> None:
    await store.put(K, {"n": 1, "l": [1, 2]})
    rec = await store.get(K)
    rec.bins["n"] = 99
    rec.bins["l"].append(3)
    assert (await store.get(K)).bins == {"n": 1, "l": [1, 2]}


async def test_delete_returns_true_then_false(store: Any) -> None:
    await store.put(K, {"a": 1})
    assert await store.delete(K) is True
    assert await store.get(K) is None
    assert await store.delete(K) is False


async def test_recreate_after_delete_starts_at_generation_1(store: Any) -> None:
    await store.put(K, {"a": 1})
    await store.put(K, {"a": 2})
    await store.delete(K)
    assert await store.put(K, {"a": 3}) == 1


async def test_delete_with_generation(store: Any) -> None:
    await store.put(K, {"a": 1})
    with pytest.raises(GenerationError):
        await store.delete(K, generation=5)
    assert await store.delete(K, generation=1) is True


async def test_get_many_keeps_order_and_reports_absent(store: Any) -> None:
    for i in range(0, 10, 2):
        await store.put(key(i), {"i": i})
    recs = await store.get_many([key(i) for i in range(10)])
    assert [r.bins["i"] if r else None for r in recs] == [0, None, 2, None, 4, None, 6, None, 8, None]
    assert await store.get_many([]) == []


async def test_scan_returns_every_live_record_of_the_set_only(store: Any) -> None:
    for i in range(50):
        await store.put(key(i), {"i": i})
    await store.put(Key("test", "other", 1), {"x": 1})
    await store.put(Key("ns2", "players", 1), {"x": 1})
    await store.delete(key(7))
    found = {rec.key.user_key: rec.bins["i"] async for rec in store.scan("test", "players")}
    assert found == {i: i for i in range(50) if i != 7}
    assert [r async for r in store.scan("nope", "players")] == []


async def test_scan_keys_are_usable(store: Any) -> None:
    await store.put(Key("test", "s", b"\x01"), {"a": 1})
    (rec,) = [r async for r in store.scan("test", "s")]
    assert rec.key == Key("test", "s", b"\x01")
    assert (await store.get(rec.key)).bins == {"a": 1}


# --- exists policies and generation (the CAS matrix) -----------------------------------------------

# (present?, generation arg, exists) -> expected: "ok" or an error class.
# generation: None, "match" (current generation; 0 when absent), "mismatch".
MATRIX = [
    (False, None, "upsert", "ok"),
    (False, "match", "upsert", "ok"),
    (False, "mismatch", "upsert", GenerationError),
    (False, None, "create", "ok"),
    (False, "match", "create", "ok"),
    (False, "mismatch", "create", GenerationError),
    (False, None, "update", RecordNotFoundError),
    (False, "match", "update", RecordNotFoundError),
    (False, "mismatch", "update", RecordNotFoundError),
    (False, None, "replace", RecordNotFoundError),
    (False, "match", "replace", RecordNotFoundError),
    (False, "mismatch", "replace", RecordNotFoundError),
    (True, None, "upsert", "ok"),
    (True, "match", "upsert", "ok"),
    (True, "mismatch", "upsert", GenerationError),
    (True, None, "create", RecordExistsError),
    (True, "match", "create", RecordExistsError),
    (True, "mismatch", "create", RecordExistsError),
    (True, None, "update", "ok"),
    (True, "match", "update", "ok"),
    (True, "mismatch", "update", GenerationError),
    (True, None, "replace", "ok"),
    (True, "match", "replace", "ok"),
    (True, "mismatch", "replace", GenerationError),
]


@pytest.mark.parametrize(("present", "gen", "exists", "expected"), MATRIX)
async def test_cas_matrix(store: Any, present: bool, gen: str | None, exists: str, expected: Any) -> None:
    if present:
        await store.put(K, {"a": 1, "b": 2})
        await store.put(K, {"a": 1})  # generation 2
    current = 2 if present else 0
    generation = None if gen is None else current if gen == "match" else current + 7
    if expected == "ok":
        assert await store.put(K, {"a": 10}, generation=generation, exists=exists) == current + 1
        rec = await store.get(K)
        expected_bins = {"a": 10} if (not present or exists == "replace") else {"a": 10, "b": 2}
        assert rec.bins == expected_bins and rec.generation == current + 1
    else:
        with pytest.raises(expected) as info:
            await store.put(K, {"a": 10}, generation=generation, exists=exists)
        assert isinstance(info.value, DatastoreError)
        rec = await store.get(K)
        assert (rec.generation if rec else 0) == current  # nothing written


async def test_error_codes_are_stable(store: Any) -> None:
    await store.put(K, {"a": 1})
    for call, code in [
        (store.put(K, {"a": 1}, exists="create"), "record_exists"),
        (store.put(K, {"a": 1}, generation=9), "generation"),
        (store.put(key("none"), {"a": 1}, exists="update"), "record_not_found"),
    ]:
        with pytest.raises(DatastoreError) as info:
            await call
        assert info.value.code == code


async def test_unknown_exists_policy_is_rejected(store: Any) -> None:
    with pytest.raises(DatastoreError):
        await store.put(K, {"a": 1}, exists="sometimes")


# --- operate -------------------------------------------------------------------------------------


async def test_operate_applies_all_ops_with_one_generation_bump(store: Any) -> None:
    await store.put(K, {"xp": 10, "gone": 1, "log": [1]})
    rec = await store.operate(K, [
        ops.incr("xp", 5), ops.put("name", "al"), ops.remove("gone"), ops.append("log", 2),
        ops.read("xp"), ops.read("log"), ops.read("missing"),
    ])
    assert rec.generation == 2
    assert rec.bins == {"xp": 15, "log": [1, 2]}
    assert (await store.get(K)).bins == {"xp": 15, "name": "al", "log": [1, 2]}


async def test_operate_read_all_bins(store: Any) -> None:
    await store.put(K, {"a": 1, "b": [2]})
    rec = await store.operate(K, [ops.read()])
    assert rec.bins == {"a": 1, "b": [2]} and rec.generation == 1  # reads do not bump


async def test_operate_reads_see_values_at_their_position(store: Any) -> None:
    await store.put(K, {"l": [1]})
    rec = await store.operate(K, [ops.read("l"), ops.append("l", 2)])
    assert rec.bins == {"l": [1]}


async def test_operate_incr_float_and_missing_bin(store: Any) -> None:
    rec = await store.operate(K, [ops.incr("n", 2), ops.incr("f", 0.5), ops.incr("f", 1), ops.read("n"),
                                  ops.read("f")])
    assert rec.bins == {"n": 2, "f": 1.5} and rec.generation == 1


async def test_operate_write_on_absent_record_creates_it(store: Any) -> None:
    rec = await store.operate(K, [ops.append("l", "x")])
    assert rec.generation == 1
    assert (await store.get(K)).bins == {"l": ["x"]}


async def test_operate_only_reads_on_absent_record_raises(store: Any) -> None:
    with pytest.raises(RecordNotFoundError):
        await store.operate(K, [ops.read("a")])
    with pytest.raises(RecordNotFoundError):
        await store.operate(K, [ops.touch(10)])
    assert await store.get(K) is None


async def test_operate_incr_on_non_number_is_a_clear_error(store: Any) -> None:
    await store.put(K, {"s": "text", "b": True})
    for name in ("s", "b"):
        with pytest.raises(InvalidBinError, match="not a number"):
            await store.operate(K, [ops.incr(name, 1)])
    assert (await store.get(K)).generation == 1


async def test_operate_incr_overflow_is_rejected(store: Any) -> None:
    await store.put(K, {"n": 2**64 - 1})
    with pytest.raises(InvalidBinError, match="overflow"):
        await store.operate(K, [ops.incr("n", 1)])


async def test_operate_append_max_len_drops_oldest(store: Any) -> None:
    for i in range(7):
        await store.operate(K, [ops.append("l", i, max_len=3)])
    rec = await store.get(K)
    assert rec.bins["l"] == [4, 5, 6] and rec.generation == 7


async def test_operate_append_on_non_list_raises(store: Any) -> None:
    await store.put(K, {"l": 5})
    with pytest.raises(InvalidBinError, match="not a list"):
        await store.operate(K, [ops.append("l", 1)])


async def test_operate_generation_check(store: Any) -> None:
    await store.put(K, {"n": 1})
    with pytest.raises(GenerationError):
        await store.operate(K, [ops.incr("n", 1)], generation=3)
    rec = await store.operate(K, [ops.incr("n", 1), ops.read("n")], generation=1)
    assert rec.bins == {"n": 2} and rec.generation == 2


@pytest.mark.parametrize("bad", [[], None, [("incr", "n", 1)], "incr"])
async def test_operate_rejects_bad_op_lists(store: Any, bad: Any) -> None:
    with pytest.raises(InvalidBinError):
        await store.operate(K, bad)


def test_op_constructors_validate() -> None:
    with pytest.raises(InvalidBinError):
        ops.incr("n", "1")  # type: ignore[arg-type]
    with pytest.raises(InvalidBinError):
        ops.append("l", 1, max_len=0)
    with pytest.raises(InvalidBinError):
        ops.put("", 1)


# --- cas -------------------------------------------------------------------------------------------


async def test_cas_creates_then_updates(store: Any) -> None:
    rec = await store.cas(K, lambda b: {**b, "n": b.get("n", 0) + 1})
    assert rec.bins == {"n": 1} and rec.generation == 1
    rec = await store.cas(K, lambda b: {**b, "n": b["n"] + 1})
    assert rec.bins == {"n": 2} and rec.generation == 2
    assert (await store.get(K)).bins == {"n": 2}


async def test_cas_replaces_bins_so_fn_can_drop_one(store: Any) -> None:
    await store.put(K, {"a": 1, "b": 2})
    await store.cas(K, lambda b: {"a": b["a"]})
    assert (await store.get(K)).bins == {"a": 1}


async def test_cas_keeps_the_expiry(store: Any) -> None:
    await store.put(K, {"n": 1}, ttl=100)
    exp = (await store.get(K)).expires_at
    rec = await store.cas(K, lambda b: {"n": b["n"] + 1})
    assert rec.expires_at == exp and (await store.get(K)).expires_at == exp


async def test_cas_fn_returning_none_writes_nothing(store: Any) -> None:
    await store.put(K, {"n": 1})
    rec = await store.cas(K, lambda b: None)
    assert rec.generation == 1


async def test_cas_accepts_a_coroutine_function(store: Any) -> None:
    async def bump(b: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"n": b.get("n", 0) + 1}

    assert (await store.cas(K, bump)).bins == {"n": 1}


async def test_200_concurrent_cas_increments_are_exact(store: Any) -> None:
    async def bump(i: int) -> None:
        await asyncio.sleep(0.001 * (i % 3))
        await store.cas(K, lambda b: {"n": b.get("n", 0) + i, "c": b.get("c", 0) + 1})

    await asyncio.wait_for(asyncio.gather(*(bump(i) for i in range(200))), 30)
    rec = await store.get(K)
    assert rec.bins == {"n": sum(range(200)), "c": 200}
    assert rec.generation == 200


async def test_cas_conflicting_with_slow_fn_retries_then_gives_up(store: Any) -> None:
    """fn awaits, so another writer lands in between: cas retries, and fails after its retries."""
    await store.put(K, {"n": 0})
    attempts = 0

    async def slow(b: dict[str, Any]) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        await store.put(K, {"n": b["n"] + 100})  # an interfering write every time
        return {"n": b["n"] + 1}

    with pytest.raises(GenerationError):
        await store.cas(K, slow, retries=3)
    assert attempts == 4
    assert store.stats()["cas_retries"] >= 4


async def test_concurrent_cas_with_awaiting_fn_stays_exact(store: Any) -> None:
    async def bump(b: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"n": b.get("n", 0) + 1}

    await asyncio.wait_for(asyncio.gather(*(store.cas(K, bump, retries=100) for _ in range(20))), 30)
    rec = await store.get(K)
    assert rec.bins == {"n": 20} and rec.generation == 20


# --- TTL -------------------------------------------------------------------------------------------


async def test_ttl_sets_expires_at_and_expired_records_vanish_at_once(store: Any) -> None:
    before = time.time()
    await store.put(K, {"a": 1}, ttl=1.0)  # long enough to be read back on a loaded machine
    rec = await store.get(K)
    assert before + 1.0 <= rec.expires_at <= time.time() + 1.0
    await asyncio.sleep(max(0.0, rec.expires_at - time.time()) + 0.02)
    assert await store.get(K) is None
    assert await store.get_many([K]) == [None]
    assert [r async for r in store.scan("test", "players")] == []
    assert await store.delete(K) is False


async def test_expired_record_counts_as_absent_for_policies(store: Any) -> None:
    await store.put(K, {"a": 1}, ttl=0.1)
    await asyncio.sleep(0.15)
    with pytest.raises(RecordNotFoundError):
        await store.put(K, {"a": 2}, exists="update")
    assert await store.put(K, {"b": 2}, exists="create") == 1
    assert (await store.get(K)).bins == {"b": 2}


async def test_write_without_ttl_clears_expiry_and_ttl_minus_2_keeps_it(store: Any) -> None:
    await store.put(K, {"a": 1}, ttl=100)
    exp = (await store.get(K)).expires_at
    await store.put(K, {"a": 2}, ttl=-2)
    assert (await store.get(K)).expires_at == exp
    await store.put(K, {"a": 3})
    assert (await store.get(K)).expires_at is None


async def test_touch_sets_ttl_and_bumps_generation(store: Any) -> None:
    await store.put(K, {"a": 1})
    rec = await store.operate(K, [ops.touch(0.15)])
    assert rec.generation == 2 and rec.expires_at is not None
    await asyncio.sleep(0.2)
    assert await store.get(K) is None


async def test_sweeper_reclaims_expired_records(store: Any) -> None:
    for i in range(20):
        await store.put(key(i), {"i": i}, ttl=0.05)
    await store.put(key("keep"), {"i": -1})
    for _ in range(60):  # up to 3 s
        if store.stats()["records"] == 1:
            break
        await asyncio.sleep(0.05)
    assert store.stats()["records"] == 1
    assert store.stats()["expired"] >= 20


@pytest.mark.parametrize("ttl", ["10", -3, [1]])
async def test_bad_ttl_is_rejected(store: Any, ttl: Any) -> None:
    with pytest.raises(InvalidBinError):
        await store.put(K, {"a": 1}, ttl=ttl)


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bins",
    [{"a": {1, 2}}, {"a": object()}, {1: "x"}, {"": 1}, {"a": {"k": {3: 4}}}, {"a": 2**64},
     {"a": -(2**63) - 1}, {"a": [1, 2, complex(1, 2)]}, "not a dict", None, [("a", 1)]],
)
async def test_bad_bins_are_rejected_with_a_clear_error(store: Any, bins: Any) -> None:
    with pytest.raises(InvalidBinError) as info:
        await store.put(K, bins)
    assert info.value.code == "bad_bin"
    assert await store.get(K) is None


async def test_bad_value_in_operate_is_rejected(store: Any) -> None:
    with pytest.raises(InvalidBinError):
        await store.operate(K, [ops.put("a", {1, 2})])
    with pytest.raises(InvalidBinError):
        await store.operate(K, [ops.append("a", object())])


async def test_oversized_record_is_rejected_and_nothing_written(store: Any) -> None:
    await store.put(K, {"a": 1})
    with pytest.raises(RecordTooBigError) as info:
        await store.put(K, {"big": "x" * 200_000})
    assert info.value.code == "record_too_big"
    with pytest.raises(RecordTooBigError):
        await store.operate(K, [ops.put("big", b"x" * 140_000)])
    rec = await store.get(K)
    assert rec.bins == {"a": 1} and rec.generation == 1
    assert await store.put(K, {"ok": "x" * 100_000}) == 2  # under the 128 KiB default


async def test_max_record_bytes_option(backend: str, tmp_path: Any) -> None:
    from datastore import open_store

    from .conftest import URLS, check_and_close

    s = await open_store(URLS[backend](tmp_path) + "&max_record_bytes=100")
    try:
        await s.put(K, {"a": "x" * 50})
        with pytest.raises(RecordTooBigError):
            await s.put(K, {"a": "x" * 150})
    finally:
        await check_and_close(s)


# --- lifecycle -------------------------------------------------------------------------------------


async def test_closed_store_raises(store: Any) -> None:
    await store.put(K, {"a": 1})
    await store.close()
    await store.close()  # idempotent
    for call in (store.get(K), store.put(K, {"a": 1}), store.delete(K), store.operate(K, [ops.read()]),
                 store.get_many([K])):
        with pytest.raises(StoreClosedError) as info:
            await call
        assert info.value.code == "closed"


async def test_stats_report_records_partitions_and_counters(store: Any) -> None:
    for i in range(30):
        await store.put(key(i), {"i": i})
    await store.get(key(1))
    await store.cas(key(2), lambda b: {"i": 0})
    st = store.stats()
    assert st["records"] == 30
    assert 1 <= st["partitions_used"] <= 30
    assert st["puts"] >= 31 and st["gets"] >= 2 and st["cas_attempts"] == 1 and st["cas_retries"] == 0
