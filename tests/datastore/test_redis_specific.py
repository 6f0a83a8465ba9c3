"""What only the Redis backend has: its layout, scripts by SHA, pipelining, cluster spread, many clients.

The API itself is covered by the conformance suite (``test_api.py`` runs on ``redis`` and
``redis-cluster`` too); here the data is also inspected with a plain redis-py client.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from datastore import (
    InvalidBinError,
    InvalidURLError,
    Key,
    RecordTooBigError,
    StorageError,
    open_store,
    ops,
)
from datastore.policy import apply_ops
from datastore.redis_codec import KeyCodec, decode_value, encode_value
from datastore.redis_conn import Slots
from datastore.redis_lua import SCRIPTS
from datastore.redis_store import RedisStore
from loadtest.procs import free_port
from tests import redis_servers

from .conftest import REDIS_FIXTURES, REDIS_URLS, redis_servers_of
from .test_model import SETTINGS, StoreModel

pytestmark = pytest.mark.redis
K = Key("test", "players", "alice")


@pytest.fixture(params=list(REDIS_FIXTURES))
def servers(request: pytest.FixtureRequest) -> Any:
    """The session's single server or cluster, emptied; ``servers.kind`` names which."""
    srv = redis_servers_of(request, request.param)
    srv.kind = request.param
    return srv


@pytest.fixture
def url(servers: Any) -> str:
    return REDIS_URLS[servers.kind]


@pytest.fixture
async def store(url: str) -> AsyncIterator[RedisStore]:
    s = await open_store(url)
    assert isinstance(s, RedisStore)
    try:
        yield s
    finally:
        await s.close()


def nodes(servers: Any) -> list[redis.Redis]:
    return redis_servers.node_clients(servers)


def owner(servers: Any, name: bytes) -> redis.Redis:
    """The node holding a key (the only node for a single server)."""
    found = [c for c in nodes(servers) if name in set(c.scan_iter(count=1000))]
    assert len(found) == 1, f"{name!r} on {len(found)} nodes"
    return found[0]


def all_keys(servers: Any) -> list[bytes]:
    return [k for c in nodes(servers) for k in c.scan_iter(count=1000)]


# --- layout ----------------------------------------------------------------------------------------


async def test_record_is_one_hash_with_partition_hash_tag(store: RedisStore, servers: Any) -> None:
    await store.put(K, {"n": 42, "f": 1.5, "s": "x", "l": [1, "a"], "t": True})
    name = b"r:test:players:{test:%d}:salice" % K.partition
    assert all_keys(servers) == [name]
    c = owner(servers, name)
    assert c.type(name) == b"hash"
    h = c.hgetall(name)
    assert h[b"\xffg"] == b"1"
    assert h[b"n"] == b"42" and h[b"f"] == b"f1.5"
    for field in (b"s", b"l", b"t"):
        assert h[field][:1] == b"m"  # type byte + msgpack
    assert {decode_value(v) for f, v in h.items() if f in (b"s", b"t")} == {"x", True}
    assert len(h) == 6  # 5 bins + generation, no expiry field without a TTL


async def test_ints_are_decimal_strings_so_hincrby_works(store: RedisStore, servers: Any) -> None:
    await store.put(K, {"xp": 10})
    name = KeyCodec().name(K)
    assert owner(servers, name).hincrby(name, "xp", 5) == 15
    assert (await store.get(K)).bins == {"xp": 15}
    rec = await store.operate(K, [ops.incr("xp", 1), ops.read("xp")])
    assert rec.bins == {"xp": 16} and rec.generation == 2


async def test_values_roundtrip_through_the_field_encoding() -> None:
    for v in [
        0,
        -1,
        2**64 - 1,
        -(2**63),
        1.0,
        -0.0,
        1e300,
        float("inf"),
        "",
        "é",
        b"",
        b"\x00",
        True,
        False,
        [],
        {},
        [1, [2.5, b"x"]],
        {"a": None},
    ]:
        out = decode_value(encode_value(v))
        assert out == v and type(out) is type(v)


async def test_odd_names_and_keys_stay_apart_and_scan_returns_them(store: RedisStore) -> None:
    keys = [
        Key("a:b", "c*", "k"),
        Key("a", "b:c*", "k"),
        Key("a", "b", "x:{y}:*?"),
        Key("a", "b", -7),
        Key("a", "b", b"\x00:{}\xff"),
        Key("a", "b", "é"),
        Key("ns{", "}s", 1),
    ]
    for i, k in enumerate(keys):
        await store.put(k, {"i": i})
    found = {}
    for ns, st in {(k.namespace, k.set) for k in keys}:
        async for rec in store.scan(ns, st):
            found[rec.key] = rec.bins["i"]
    assert found == {k: i for i, k in enumerate(keys)}
    assert [type(k.user_key) for k in found] == [type(k.user_key) for k in found]
    assert {type(k.user_key) for k in found} == {str, int, bytes}


async def test_bin_names_like_the_reserved_fields_are_ordinary_bins(store: RedisStore) -> None:
    bins = {"_gen": "a", "_exp": 1, "\xff": 2, "ÿg": 3}
    await store.put(K, bins, ttl=100)
    rec = await store.get(K)
    assert rec.bins == bins and rec.generation == 1 and rec.expires_at is not None


async def test_ttl_is_pexpireat_on_the_hash(store: RedisStore, servers: Any) -> None:
    await store.put(K, {"a": 1}, ttl=100)
    name = KeyCodec().name(K)
    c = owner(servers, name)
    assert 99_000 < c.pttl(name) <= 100_001  # PEXPIREAT rounds the microsecond expiry up
    exp = (await store.get(K)).expires_at
    assert abs(c.execute_command("PEXPIRETIME", name) / 1000 - exp) < 0.002
    await store.operate(K, [ops.touch(5)])
    assert 4_000 < c.pttl(name) <= 5_001
    await store.put(K, {"a": 2})  # a write without ttl clears the expiry
    assert c.pttl(name) == -1 and b"\xffe" not in c.hgetall(name)


async def test_cluster_spreads_partitions_over_slots_and_nodes(redis_cluster: Any) -> None:
    servers = redis_cluster
    servers.flush()
    store = await open_store(servers.url())
    try:
        await _check_spread(store, servers)
    finally:
        await store.close()


async def _check_spread(store: Any, servers: Any) -> None:
    keys = [Key("test", "players", i) for i in range(300)]
    await asyncio.gather(*(store.put(k, {"i": i}) for i, k in enumerate(keys)))
    per_node = [c.dbsize() for c in nodes(servers)]
    assert sum(per_node) == 300 and min(per_node) > 30, per_node
    codec = KeyCodec()
    c0 = nodes(servers)[0]
    slots = {c0.execute_command("CLUSTER KEYSLOT", codec.name(k)) for k in keys}
    assert len(slots) > 250  # one namespace, many slots
    same_partition = [
        k for k in (Key("test", "other", i) for i in range(20_000)) if k.partition == keys[0].partition
    ][:3]
    assert {c0.execute_command("CLUSTER KEYSLOT", codec.name(k)) for k in [keys[0], *same_partition]} == {
        c0.execute_command("CLUSTER KEYSLOT", codec.name(keys[0]))
    }
    assert sorted([r.key.user_key async for r in store.scan("test", "players")]) == list(range(300))


# --- scripts ---------------------------------------------------------------------------------------


def commandstats(servers: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in nodes(servers):
        for name, st in c.info("commandstats").items():
            out[name] = out.get(name, 0) + int(st["calls"])
    return out


async def test_scripts_are_loaded_once_and_called_by_sha(store: RedisStore, servers: Any) -> None:
    for c in nodes(servers):
        c.config_resetstat()
        assert all(c.script_exists(*store._link.sha.values()))
    for i in range(10):
        await store.put(K, {"n": i})
        await store.operate(K, [ops.incr("n", 1)])
    await store.delete(K)
    st = commandstats(servers)
    assert st.get("cmdstat_evalsha") == 21
    assert "cmdstat_eval" not in st and "cmdstat_script|load" not in st


async def test_script_flush_is_recovered_by_reloading(store: RedisStore, servers: Any) -> None:
    """NOSCRIPT loads the scripts on the node that said it, in the same write as the retried call."""
    await store.put(K, {"n": 1})
    loads = store.stats()["script_loads"]
    for c in nodes(servers):
        c.script_flush()
        c.config_resetstat()
    assert await store.put(K, {"n": 2}) == 2  # NOSCRIPT -> SCRIPT LOAD x4 + EVALSHA again
    assert store.stats()["script_loads"] == loads + len(SCRIPTS)
    assert all(owner(servers, KeyCodec().name(K)).script_exists(*store._link.sha.values()))
    assert (await store.operate(K, [ops.incr("n", 1), ops.read("n")])).bins == {"n": 3}
    # a key on every node: each node that lost its scripts gets them again, once
    keys = [Key("test", "players", i) for i in range(60)]
    for k in keys:
        await store.put(k, {"i": 1})
    for c in nodes(servers):
        assert all(c.script_exists(*store._link.sha.values()))
    assert store.stats()["script_loads"] == loads + len(SCRIPTS) * len(nodes(servers))
    assert commandstats(servers).get("cmdstat_evalsha") == 2 + len(nodes(servers)) + len(keys)


async def test_get_many_is_pipelined(
    store: RedisStore, servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [Key("test", "players", i) for i in range(100)]
    await asyncio.gather(*(store.put(k, {"i": i}) for i, k in enumerate(keys[::2])))

    async def no_single_get(*args: Any) -> Any:
        raise AssertionError("get_many must not send one HGETALL per round trip")

    monkeypatch.setattr(store._link.client, "hgetall", no_single_get)
    before = store.stats()["pipelines"]
    recs = await store.get_many(keys)
    assert [r.bins["i"] if r else None for r in recs] == [i // 2 if i % 2 == 0 else None for i in range(100)]
    assert store.stats()["pipelines"] == before + 1


async def test_script_arguments_travel_as_one_blob(store: RedisStore, servers: Any) -> None:
    """put and operate send KEYS[1] plus ONE argument (msgpack) whatever the number of bins or ops."""
    for c in nodes(servers):
        c.config_set("slowlog-log-slower-than", 0)  # log every command with its arguments
        c.slowlog_reset()
    bins = {f"b{i}": i for i in range(50)}
    try:
        await store.put(K, bins)
        await store.operate(K, [ops.incr(f"b{i}", 1) for i in range(50)])
        # raw entries [id, time, duration, [argument, ...], ...]: arguments exactly as sent
        logged = [e[3] for c in nodes(servers) for e in c.execute_command("SLOWLOG", "GET", "128")]
    finally:
        for c in nodes(servers):
            c.config_set("slowlog-log-slower-than", 10000)
    evalsha = [cmd for cmd in logged if cmd[0].upper() == b"EVALSHA"]
    assert len(evalsha) == 2
    for cmd in evalsha:  # EVALSHA sha 1 key blob (slowlog shows at most 32 arguments: many would show)
        assert len(cmd) == 5 and cmd[2] == b"1" and cmd[3] == KeyCodec().name(K)
    assert (await store.get(K)).bins == {f"b{i}": i + 1 for i in range(50)}


async def test_pooled_connections_are_returned_after_errors(store: RedisStore) -> None:
    """Error replies (policy failures, NOSCRIPT) and failed calls leave no connection checked out."""
    from datastore import GenerationError, RecordExistsError

    await store.put(K, {"a": 1})
    for _ in range(20):
        with pytest.raises(GenerationError):
            await store.put(K, {"a": 2}, generation=7)
        with pytest.raises(RecordExistsError):
            await store.put(K, {"a": 2}, exists="create")
        with pytest.raises(InvalidBinError):
            await store.operate(K, [ops.append("a", 1)])
    await asyncio.gather(*(store.put(Key("test", "players", i), {"i": i}) for i in range(300)))
    if store._link._pool is not None:
        assert not store._link._pool._in_use_connections
    else:
        for node in store._link.client.get_primaries():
            assert len(node._free) == len(node._connections)
    assert store._link.slots.free == 256
    assert (await store.get(K)).generation == 1


async def test_cas_rewriting_the_same_bins_is_two_redis_calls(store: RedisStore, servers: Any) -> None:
    """The hot conditional write (same bins, generation, ttl kept) reads once and writes once in Lua."""
    await store.put(K, {"xp": 1, "name": "x"}, ttl=100)
    for c in nodes(servers):
        c.config_resetstat()
    rec = await store.cas(K, lambda b: {**b, "xp": b["xp"] + 1})
    assert rec.bins == {"xp": 2, "name": "x"} and rec.expires_at is not None
    st = commandstats(servers)
    assert st.get("cmdstat_evalsha") == 1 and st.get("cmdstat_hgetall") == 2  # cas' get, then the script
    assert st.get("cmdstat_hset") == 1
    assert not {"cmdstat_del", "cmdstat_hmget", "cmdstat_pexpireat"} & set(st)  # (TIME: the expiry check)


async def test_slots_are_fifo_and_survive_cancellation() -> None:
    slots = Slots(1)
    order: list[int] = []

    async def user(i: int, hold: float) -> None:
        if slots.free:
            slots.free -= 1
        else:
            await slots.wait()
        try:
            order.append(i)
            await asyncio.sleep(hold)
        finally:
            slots.release()

    first = asyncio.create_task(user(0, 0.02))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(user(i, 0)) for i in range(1, 5)]
    await asyncio.sleep(0)
    waiters[1].cancel()  # user 2 gives up while waiting
    await asyncio.gather(first, *waiters, return_exceptions=True)
    assert order == [0, 1, 3, 4]
    assert slots.free == 1 and not slots._waiters
    # cancelled right after being handed the slot: the slot passes on, nothing leaks
    slots.free = 0
    a = asyncio.create_task(slots.wait())
    b = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    slots.release()  # hands the slot to a
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    await asyncio.wait_for(b, 1)  # b got the slot a could not use
    slots.release()
    assert slots.free == 1


# --- semantics the Lua must mirror exactly ---------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"a": 1, "b": 2}, {"a": 5, "b": 6}),  # same bins, same order: overwritten in place
        ({"a": 1}, {"a": 5, "b": 6}),  # a prefix of the new bins
        ({"a": 1, "b": 2}, {"b": 6, "a": 5}),  # other order: the hash is recreated
        ({"a": 1, "b": 2, "c": 3}, {"a": 5, "b": 6}),  # a bin dropped
        ({"a": 1, "b": 2}, {"a": 5, "b": None, "c": 7}),  # None removes, even in replace
        ({"a": 1, "b": 2}, {"a": "x" * 5000, "b": 1}),  # big: the HMGET + DEL path
    ],
)
@pytest.mark.parametrize("ttl", [None, 100, -2])  # no ttl (clears), a new one, TTL_KEEP
@pytest.mark.parametrize("had_ttl", [False, True])
async def test_replace_gives_the_embedded_stores_record(
    store: RedisStore, servers: Any, before: dict[str, Any], after: dict[str, Any], ttl: Any, had_ttl: bool
) -> None:
    """Whichever way the script replaces (in place or recreating the hash): same bins, bin order, TTL."""
    mem = await open_store("memory://")
    try:
        for s in (store, mem):
            await s.put(K, before, ttl=50 if had_ttl else None)
            gen = (await s.get(K)).generation
            assert await s.put(K, after, generation=gen, exists="replace", ttl=ttl) == gen + 1
        want, got = await mem.get(K), await store.get(K)
        assert got.bins == want.bins
        if all(len(encode_value(v)) <= 64 for v in want.bins.values()):  # a listpack hash keeps its order
            assert list(got.bins.items()) == list(want.bins.items())
        assert (got.expires_at is None) == (want.expires_at is None)
        name = KeyCodec().name(K)
        c = owner(servers, name)
        h = c.hgetall(name)
        assert {f for f in h if not f.startswith(b"\xff")} == {b.encode() for b in want.bins}
        assert (b"\xffe" in h) == (want.expires_at is not None)
        pttl = c.pttl(name)
        if want.expires_at is None:
            assert pttl == -1
        else:
            assert abs(pttl / 1000 - (want.expires_at - time.time())) < 1
            assert abs(got.expires_at - want.expires_at) < 1
    finally:
        await mem.close()




async def test_incr_is_exact_over_the_whole_int_range(store: RedisStore) -> None:
    """Lua numbers are doubles; ints beyond 2^53 (and beyond HINCRBY's int64) must stay exact."""
    await store.put(K, {"n": 2**63 - 1})
    assert (await store.operate(K, [ops.incr("n", 1), ops.read("n")])).bins == {"n": 2**63}
    assert (await store.operate(K, [ops.incr("n", 2**63 - 1), ops.read("n")])).bins == {"n": 2**64 - 1}
    with pytest.raises(InvalidBinError, match="overflow"):
        await store.operate(K, [ops.incr("n", 1)])
    assert (await store.operate(K, [ops.incr("n", -(2**64 - 1) - 2**63), ops.read("n")])).bins == {
        "n": -(2**63)
    }
    with pytest.raises(InvalidBinError, match="overflow"):
        await store.operate(K, [ops.incr("n", -1)])
    with pytest.raises(InvalidBinError, match="overflow"):
        await store.operate(K, [ops.incr("m", 2**70)])


async def test_random_incr_and_append_match_the_policy(store: RedisStore) -> None:
    """Random op sequences give what ``policy.apply_ops`` gives (ints, floats, lists of all msgpack kinds)."""
    rnd = random.Random(7)
    items = [
        0,
        -1,
        127,
        128,
        -33,
        2**16,
        2**32,
        2**64 - 1,
        -(2**63),
        0.1,
        1e300,
        "",
        "a" * 31,
        "b" * 40,
        "c" * 300,
        b"d" * 300,
        b"e" * 20_000,
        True,
        None,
        [],
        [1, [2, [3]]],
        {"k": [1, {"j": b"x"}]},
        list(range(20)),
        {str(i): i for i in range(20)},
    ]
    model: dict[str, Any] = {}
    for step in range(300):
        op_list: list[ops.Op] = []
        for _ in range(rnd.randint(1, 4)):
            r = rnd.random()
            if r < 0.35:
                n = rnd.choice(
                    [rnd.randint(-(2**62), 2**62), rnd.randint(-100, 100), rnd.uniform(-1e6, 1e6), 2**53 + 1]
                )
                op_list.append(ops.incr(rnd.choice(["i", "j"]), n))
            elif r < 0.8:
                op_list.append(
                    ops.append(rnd.choice(["l", "m"]), rnd.choice(items), rnd.choice([None, 1, 3, 17]))
                )
            elif r < 0.9:
                op_list.append(ops.read(rnd.choice([None, "i", "l"])))
            else:
                op_list.append(ops.remove(rnd.choice(["i", "j", "l", "m"])))
        try:
            expected_bins, reads, _, _ = apply_ops(copy.deepcopy(model), op_list)
        except InvalidBinError as exc:
            with pytest.raises(InvalidBinError) as info:
                await store.operate(K, op_list)
            assert str(info.value) == str(exc), step
            continue
        if not model and not any(o.kind in ("incr", "append") for o in op_list):
            continue  # would be RecordNotFoundError on an absent record; covered elsewhere
        rec = await store.operate(K, op_list)
        assert rec.bins == reads, step
        model = expected_bins
        got = (await store.get(K)).bins
        assert got == model, step
        assert all(type(got[b]) is type(model[b]) for b in model)
        if sum(len(encode_value(v)) for v in model.values()) > 60_000:
            await store.delete(K)
            model = {}


async def test_type_errors_name_the_stored_type(store: RedisStore) -> None:
    await store.put(K, {"s": "x", "l": [1], "d": {"a": 1}, "b": b"", "t": False})
    for name, typ in [("s", "str"), ("l", "list"), ("d", "dict"), ("b", "bytes"), ("t", "bool")]:
        with pytest.raises(InvalidBinError, match=f"holding {typ}, not a number"):
            await store.operate(K, [ops.incr(name, 1)])
    with pytest.raises(InvalidBinError, match="holding dict, not a list"):
        await store.operate(K, [ops.incr("n", 1), ops.append("d", 1)])
    rec = await store.get(K)
    assert rec.generation == 1 and "n" not in rec.bins  # a failing op leaves nothing behind


async def test_merge_size_is_checked_server_side(url: str) -> None:
    s = await open_store(url + "&max_record_bytes=100")
    try:
        await s.put(K, {"a": "x" * 60})
        with pytest.raises(RecordTooBigError) as info:
            await s.put(K, {"b": "y" * 60})  # each fits alone, the merged record does not
        assert info.value.code == "record_too_big"
        assert (await s.get(K)).bins == {"a": "x" * 60}
        assert await s.put(K, {"b": "y" * 60}, exists="replace") == 2
    finally:
        await s.close()


# --- many clients, failures, URLs ------------------------------------------------------------------


async def test_200_concurrent_cas_from_several_client_connections(url: str) -> None:
    stores = [await open_store(url) for _ in range(4)]
    try:

        async def bump(i: int) -> None:
            s = stores[i % len(stores)]
            await asyncio.sleep(0.001 * (i % 3))
            await s.cas(K, lambda b: {"n": b.get("n", 0) + i, "c": b.get("c", 0) + 1}, retries=200)

        await asyncio.wait_for(asyncio.gather(*(bump(i) for i in range(200))), 60)
        rec = await stores[0].get(K)
        assert rec.bins == {"n": sum(range(200)), "c": 200} and rec.generation == 200
        attempts = sum(s.stats()["cas_attempts"] for s in stores)
        retries = sum(s.stats()["cas_retries"] for s in stores)
        assert attempts == 200 + retries  # every retry was a real conflict between connections
    finally:
        for s in stores:
            await s.close()


async def test_unreachable_or_dead_server_is_storage_error(tmp_path: Any) -> None:
    port = free_port()
    with pytest.raises(StorageError) as info:
        await open_store(f"redis://127.0.0.1:{port}/0?socket_connect_timeout=1")
    assert info.value.code == "io_error"
    server = redis_servers.start_server(tmp_path)
    try:
        s = await open_store(server.url(query="socket_timeout=2&socket_connect_timeout=1"))
        await s.put(K, {"a": 1})
    finally:
        server.stop()
    for call in (s.get(K), s.put(K, {"a": 2}), s.get_many([K]), s.operate(K, [ops.read()])):
        with pytest.raises(StorageError):
            await call
    assert s.stats()["redis_errors"] >= 4
    await s.close()


async def test_database_number_and_options_come_from_the_url(redis_single: Any) -> None:
    s = await open_store(redis_single.url(db=3, query="max_record_bytes=1000&max_connections=8"))
    try:
        await s.put(K, {"a": 1})
        assert redis.Redis(port=redis_single.port, db=3).dbsize() == 1
        assert s.stats()["max_record_bytes"] == 1000
    finally:
        await s.close()
        redis.Redis(port=redis_single.port, db=3).flushdb()
    for bad in [
        redis_single.url(query="durability=fsync"),
        redis_single.url(query="max_record_bytes=0"),
        f"redis://{redis_single.address}/x",
        f"redis+cluster://{redis_single.address}/2",
    ]:
        with pytest.raises(InvalidURLError):
            await open_store(bad)


async def test_get_hides_a_record_the_moment_it_expires(store: RedisStore) -> None:
    # a TTL long enough that a loaded CI machine still reads the record before it expires
    await store.put(K, {"a": 1}, ttl=1.0)
    rec = await store.get(K)
    assert rec is not None and rec.expires_at is not None
    await asyncio.sleep(max(0.0, rec.expires_at - time.time()))
    assert await store.get(K) is None and await store.get_many([K]) == [None]


# --- the model-based test of test_model.py, on Redis -----------------------------------------------


class RedisStoreModel(StoreModel):
    """Random operation sequences against the dict model; each example starts from an empty server."""

    servers: Any = None

    def __init__(self) -> None:
        self.servers.flush()
        super().__init__()


@pytest.fixture
def _model_servers(servers: Any) -> Any:
    RedisStoreModel.servers = servers
    RedisStoreModel.url_template = REDIS_URLS[servers.kind]
    return servers


def test_model_based_sequences(_model_servers: Any) -> None:
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(RedisStoreModel, settings=settings(SETTINGS, max_examples=25))
