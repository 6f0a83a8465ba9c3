"""Replicated writes on Redis (``replicas=N``): WAIT on every write path, in-doubt errors when replicas do
not confirm, and every acknowledged write surviving a master's SIGKILL and its replica's promotion.

Real servers on loopback: the session's 3+3 cluster (``redis_cluster_replicated``, never disturbed), a
3+3 cluster of this module that is paused and killed (``cluster-node-timeout`` 1 s), and a single master
with one replica. Writers behave like the game server's XP grants: a ``cas`` that appends a grant id
and adds 10 xp, retried with the same id after an error, done once acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from datastore import (
    GenerationError,
    Key,
    ReplicationTimeoutError,
    StorageError,
    open_store,
    ops,
)
from datastore.redis_codec import KeyCodec
from tests import redis_servers

from .conftest import REPLICATED_NODE_TIMEOUT_MS

pytestmark = pytest.mark.redis
CODEC = KeyCodec()


@pytest.fixture(scope="module")
def failover_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_servers.RedisClusterServers]:
    """3 masters + 1 replica each that the tests of this module pause and kill (and leave healthy)."""
    reason = redis_servers.redis_missing()
    if reason:
        pytest.skip(reason)
    cluster = redis_servers.start_cluster(tmp_path_factory.mktemp("failover"), masters=3, replicas=1,
                                          node_timeout_ms=REPLICATED_NODE_TIMEOUT_MS)
    yield cluster
    cluster.stop()


def replica_of(cluster: redis_servers.RedisClusterServers, master: redis_servers.RedisServer
               ) -> redis_servers.RedisServer:
    for node in cluster.replicas():
        if int(node.client.info("replication")["master_port"]) == master.port:
            return node
    raise LookupError(f"{master} has no live replica")


@contextlib.contextmanager
def paused(node: redis_servers.RedisServer) -> Iterator[None]:
    """SIGSTOP a server process for the block (it takes no part in replication meanwhile)."""
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)


def grant(grant_id: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The game server's grant as a cas function: once per id (None = already there, write nothing)."""

    def fn(bins: dict[str, Any]) -> dict[str, Any] | None:
        if grant_id in bins["grants"]:
            return None
        return {**bins, "xp": bins["xp"] + 10, "grants": [*bins["grants"], grant_id]}

    return fn


def commandstats_calls(nodes: list[redis_servers.RedisServer], command: str) -> int:
    stats = [n.client.info("commandstats").get(f"cmdstat_{command}", {}) for n in nodes]
    return sum(int(s.get("calls", 0)) for s in stats)


# --- the session's replicated cluster: WAIT on every write path, data on the replica -----------------


async def test_every_write_path_waits_and_reads_do_not(redis_cluster_replicated: Any) -> None:
    cluster = redis_cluster_replicated
    cluster.flush()
    store = await open_store(cluster.url("socket_timeout=10&replicas=1&replica_timeout=5"))
    k = Key("test", "chars", "waits")
    try:
        for n in cluster.live():
            n.client.config_resetstat()
        await store.put(k, {"xp": 0, "grants": []})                      # WAIT 1
        await store.operate(k, [ops.incr("xp", 5), ops.read("xp")])       # WAIT 2
        await store.operate(k, [ops.read("xp")])                          # read-only: none
        await store.cas(k, grant("g1"))                                   # get + put: WAIT 3
        rec = await store.cas(k, grant("g1"))                             # nothing to write: confirm, WAIT 4
        assert rec.bins == {"xp": 15, "grants": ["g1"]} and rec.generation == 3  # confirm changed nothing
        await store.get(k)
        await store.get_many([k])
        assert await store.delete(k)                                      # WAIT 5
        assert commandstats_calls(cluster.live(), "wait") == 5
        assert store.stats()["replication_timeouts"] == 0
    finally:
        await store.close()


async def test_a_confirmed_write_is_on_the_replica_at_once(redis_cluster_replicated: Any) -> None:
    cluster = redis_cluster_replicated
    cluster.flush()
    store = await open_store(cluster.url("socket_timeout=10&replicas=1&replica_timeout=5"))
    try:
        for i in range(20):
            k = Key("test", "chars", f"c{i}")
            gen = await store.put(k, {"xp": i})
            name = CODEC.name(k)
            replica = replica_of(cluster, cluster.master_for(name))
            direct = redis.Redis(port=replica.port, single_connection_client=True, socket_timeout=5)
            try:
                direct.execute_command("READONLY")  # serve the slot's reads on the replica itself
                h = direct.hgetall(name)
            finally:
                direct.close()
            assert (h[b"\xffg"], h[b"xp"]) == (b"%d" % gen, b"%d" % i), (replica, h)
    finally:
        await store.close()


# --- this module's cluster: a paused replica, then a killed master -----------------------------------


async def test_a_paused_replica_makes_each_write_path_in_doubt(failover_cluster: Any) -> None:
    cluster = failover_cluster
    cluster.flush()
    store = await open_store(cluster.url("socket_timeout=5&replicas=1&replica_timeout=0.1"))
    k = Key("test", "chars", "paused")
    try:
        await store.put(k, {"xp": 0, "grants": []})
        replica = replica_of(cluster, cluster.master_for(CODEC.name(k)))
        with paused(replica):  # ~0.6 s, below the node timeout: no failover, no FAIL flag needed
            with pytest.raises(ReplicationTimeoutError) as info:
                await store.cas(k, grant("g1"))
            err = info.value
            assert isinstance(err, StorageError) and err.in_doubt and err.code == "replication_timeout"
            assert (err.confirmed, err.required) == (0, 1) and "confirmed by 0 of 1 replicas" in str(err)
            assert (await store.get(k)).bins["grants"] == ["g1"]  # applied on the master all the same
            with pytest.raises(ReplicationTimeoutError):
                await store.cas(k, grant("g1"))  # the retry finds g1, but cannot confirm it either
            with pytest.raises(ReplicationTimeoutError):
                await store.operate(k, [ops.incr("xp", 1)])
            with pytest.raises(GenerationError) as gen_info:
                await store.put(k, {"xp": 0}, generation=1)  # refused: not in doubt, whatever replicas do
            assert gen_info.value.in_doubt is False
            assert (await store.get_many([k]))[0] is not None  # reads need no replica
        rec = await store.cas(k, grant("g1"))  # replica back: the retry confirms, applies nothing more
        assert rec.bins == {"xp": 11, "grants": ["g1"]}
        assert store.stats()["replication_timeouts"] == 3
        with paused(replica), pytest.raises(ReplicationTimeoutError):
            await store.delete(k)
        assert await store.get(k) is None
    finally:
        await store.close()


@pytest.mark.parametrize("replicas", [1, 0])
async def test_every_acknowledged_grant_survives_a_master_kill(failover_cluster: Any, replicas: int) -> None:
    """32 writers grant XP; the master with most of the records is SIGKILLed, its replica takes over, the
    dead node comes back as a replica; with ``replicas=1`` every acknowledged grant is there, and never
    is one applied twice. ``replicas=0`` (asynchronous replication) prints what it lost (often nothing:
    on loopback a replica lags by well under a millisecond)."""
    cluster = failover_cluster
    cluster.flush()
    url = cluster.url(f"socket_timeout=5&socket_connect_timeout=1&replicas={replicas}&replica_timeout=0.5")
    store = await open_store(url)
    keys = [Key("test", "chars", f"c{i}") for i in range(32)]
    for k in keys:
        await store.put(k, {"xp": 0, "grants": []})
    acked: dict[Key, set[str]] = {k: set() for k in keys}
    seen: Counter[str] = Counter()
    stop = asyncio.Event()

    async def writer(k: Key) -> None:
        for n in range(100_000):  # ends at ``stop``; bounded anyway
            if stop.is_set():
                return
            gid = f"{k.user_key}-{n}"
            for _ in range(400):  # retry this grant with the same id until acknowledged (~20 s at most)
                try:
                    await store.cas(k, grant(gid))
                except StorageError as exc:
                    seen["in_doubt" if exc.in_doubt else "not_in_doubt"] += 1
                    seen[type(exc).__name__] += 1
                    if stop.is_set():
                        return  # abandoned: not acknowledged, so nothing to check
                    await asyncio.sleep(0.05)
                    continue
                acked[k].add(gid)
                seen["acked"] += 1
                break

    tasks = [asyncio.create_task(writer(k)) for k in keys]
    try:
        await asyncio.sleep(0.5)
        owners = Counter(cluster.master_for(CODEC.name(k)) for k in keys)
        victim = owners.most_common(1)[0][0]
        victim_keys = [k for k in keys if cluster.master_for(CODEC.name(k)) is victim]
        before = sum(len(acked[k]) for k in victim_keys)
        assert before > 0
        cluster.kill(victim)
        t0 = time.monotonic()
        await asyncio.to_thread(cluster.wait_failover, 30)
        failover_s = time.monotonic() - t0
        # the promoted replica has no replica of its own: with replicas=1 its writes cannot be confirmed
        # (in doubt, not acknowledged) until the dead node is back, as a replica of the new master
        timeouts = seen["ReplicationTimeoutError"]
        await asyncio.sleep(1.0)
        assert (seen["ReplicationTimeoutError"] > timeouts) == (replicas > 0), seen
        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.to_thread(cluster.wait_ok, 30)
        after_restart = sum(len(acked[k]) for k in victim_keys)
        await asyncio.sleep(1.0)
        assert sum(len(acked[k]) for k in victim_keys) > after_restart  # its shard confirms writes again
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await store.close()
    assert seen["not_in_doubt"] + seen["in_doubt"] > 0, seen  # the kill was felt

    fresh = await open_store(cluster.url("socket_timeout=5"))
    try:
        lost = duplicated = 0
        for k, rec in zip(keys, await fresh.get_many(keys), strict=True):
            grants = rec.bins["grants"]
            duplicated += len(grants) - len(set(grants))
            lost += len(acked[k] - set(grants))
            assert rec.bins["xp"] == 10 * len(grants), k
        total = sum(len(a) for a in acked.values())
        print(f"\n  replicas={replicas}: failover {failover_s:.1f} s; {total} grants acknowledged "
              f"({before} on the victim's keys before the kill); errors seen: {dict(seen)}; "
              f"acknowledged but lost {lost}, applied twice {duplicated}")
        assert duplicated == 0
        if replicas:
            assert lost == 0
    finally:
        await fresh.close()


# --- a single master with one replica (no cluster) ---------------------------------------------------


async def test_single_master_with_a_replica_waits_for_it(tmp_path: Path) -> None:
    master = redis_servers.start_server(tmp_path / "m")
    replica = redis_servers.start_server(tmp_path / "r")
    store = None
    try:
        replica.client.replicaof("127.0.0.1", master.port)
        deadline = time.monotonic() + 10
        while replica.client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica did not sync"
            await asyncio.sleep(0.05)
        store = await open_store(master.url(query="socket_timeout=5&replicas=1&replica_timeout=0.2"))
        k = Key("test", "chars", "solo")
        assert await store.put(k, {"xp": 1}) == 1
        assert replica.client.hgetall(CODEC.name(k))[b"xp"] == b"1"  # confirmed, so already there
        with paused(replica), pytest.raises(ReplicationTimeoutError) as info:
            await store.put(k, {"xp": 2})
        assert info.value.in_doubt and "0 of 1" in str(info.value)
        with pytest.raises(ReplicationTimeoutError):  # two replicas asked, one exists: never confirmed
            s2 = await open_store(master.url(query="socket_timeout=5&replicas=2&replica_timeout=0.1"))
            try:
                await s2.put(k, {"xp": 3})
            finally:
                await s2.close()
    finally:
        if store is not None:
            await store.close()
        replica.stop()
        master.stop()


# --- in_doubt of connection failures (no replicas involved) ------------------------------------------


async def test_a_write_sent_to_a_hung_server_is_in_doubt_and_a_refused_one_is_not(tmp_path: Path) -> None:
    server = redis_servers.start_server(tmp_path)
    k = Key("test", "chars", "hung")
    store = await open_store(server.url(query="socket_timeout=0.3&socket_connect_timeout=1"))
    try:
        await store.put(k, {"xp": 1})
        with paused(server):
            with pytest.raises(StorageError) as info:
                await store.put(k, {"xp": 2})  # sent, never answered
            assert info.value.in_doubt is True and info.value.code == "io_error"
            with pytest.raises(StorageError) as info:
                await store.get(k)
            assert info.value.in_doubt is False  # a read changes nothing
            with pytest.raises(StorageError) as info:
                await store.operate(k, [ops.read("xp")])
            assert info.value.in_doubt is False  # a read-only operate neither
        # in doubt meant it: the server ran the write it had already received once it resumed
        deadline = time.monotonic() + 5
        while (await store.get(k)).bins["xp"] != 2:
            assert time.monotonic() < deadline, "the in-doubt write never landed"
            await asyncio.sleep(0.05)
        server.kill()
        # let the pooled connection see the server's close (a write sent on a connection that only
        # turns out dead when its reply is read is in doubt: the client cannot tell when it died)
        await asyncio.sleep(0.2)
        with pytest.raises(StorageError) as info:
            await store.put(k, {"xp": 3})  # connection refused: it certainly did not run
        assert info.value.in_doubt is False
        assert store.stats()["in_doubt_errors"] == 1
    finally:
        await store.close()
        server.stop()
