"""XP grants across Redis Cluster failovers (issues 15 and 16): a game server on ``redis+cluster://`` with
``replicas=1`` (a write is acknowledged once a replica confirmed it) or ``replicas=0`` (the master's word),
players killing mobs in a room, and several rounds of: SIGKILL of the master that owns the most
characters, the replica's promotion (``cluster-node-timeout`` 1 s), play on, the killed node restarted (it
comes back as the new master's replica), play on.

With ``replicas=1``: no kill ends without its ``xp`` (no ``error internal``, no grant given up: each waits
until the new master, and then its new replica, answers), none applied twice, and afterwards, per
character, stored XP is 10 x its distinct grant ids, every acknowledged grant is stored and every stored
one was acknowledged. With ``replicas=0`` the same run prints what the failovers lost (an acknowledged
write the replica had not received yet); it may lose nothing by luck and does not fail on loss.

Real parts: valkey/redis-server processes on loopback (``tests/redis_servers.py``), the server in this
process, ``shared.client`` bots. The helper's blocking calls run in a thread so the server keeps ticking.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datastore import Key, open_store
from datastore.redis_codec import KeyCodec
from gameserver.app import GameServer
from shared.client import GameClient
from tests import redis_servers
from tests.support import SECRET, server_config

from .hunters import Hunter, stop_hunting

pytestmark = pytest.mark.redis

XP = 10
PLAYERS = 8
ROUNDS = 3
NODE_TIMEOUT_MS = 1000
NAMES = [f"fighter_{i}" for i in range(PLAYERS)]


def failover_config(store_url: str) -> Any:
    return server_config(
        game={"tick_rate": 20.0, "start_room": "arena",
              "rules": {"attack_cooldown": 0.0, "respawn_seconds": 0.1, "dmg_min": 10, "dmg_max": 10}},
        rooms=[{"name": "town"},
               {"name": "arena", "width": 200.0, "height": 200.0, "mob_count": 36, "mob_hp": 20,
                "mob_xp": XP}],
        store={"url": store_url},
        persist={"grant_backoff_max": 0.5, "recent_grants": 5000, "flush_interval": 0.5},
    )


def busiest_master(cluster: redis_servers.RedisClusterServers) -> tuple[redis_servers.RedisServer, int]:
    """The master owning the most characters now, and how many it owns."""
    codec = KeyCodec()
    owners = Counter(cluster.master_for(codec.name(Key("game", "characters", n))) for n in NAMES)
    node, count = owners.most_common(1)[0]
    return node, count


@pytest.mark.parametrize("replicas", [1, 0])
async def test_grants_survive_master_kills_none_lost_none_twice(tmp_path: Path, replicas: int) -> None:
    reason = redis_servers.redis_missing()
    if reason:
        pytest.skip(reason)
    cluster = redis_servers.start_cluster(tmp_path / "cluster", masters=3, replicas=1,
                                          node_timeout_ms=NODE_TIMEOUT_MS)
    url = cluster.url(f"replicas={replicas}&replica_timeout=0.5&socket_timeout=3&socket_connect_timeout=1")
    server: GameServer | None = None
    clients: list[GameClient] = []
    tasks: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()
    rounds: list[dict[str, Any]] = []
    try:
        server = GameServer(failover_config(url))
        await server.start()
        ws = f"ws://127.0.0.1:{server.port}/ws"
        hunters: list[Hunter] = []
        for i, name in enumerate(NAMES):
            c = await GameClient.connect(ws, timeout=5.0)
            clients.append(c)
            await c.login(name, SECRET)
            hunters.append(Hunter(c, i))
        tasks += [asyncio.create_task(h.read()) for h in hunters]
        tasks += [asyncio.create_task(h.hunt(stop)) for h in hunters]
        await asyncio.sleep(1.0)
        for _ in range(ROUNDS):
            victim, owned = await asyncio.to_thread(busiest_master, cluster)
            acked0 = sum(len(h.acked) for h in hunters)
            t_kill = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)
            await asyncio.to_thread(cluster.wait_failover, 20.0)
            t_promoted = time.monotonic()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.restart, victim)   # back as the new master's replica
            await asyncio.to_thread(cluster.wait_ok, 20.0)
            t_whole = time.monotonic()
            await asyncio.sleep(1.0)
            kills = sum(1 for h in hunters for t in h.kills if t_kill <= t <= t_promoted)
            rounds.append({"owned": owned, "promoted_after": round(t_promoted - t_kill, 2),
                           "replica_back_after": round(t_whole - t_kill, 2),
                           "kills_during_failover": kills,
                           "acked_in_round": sum(len(h.acked) for h in hunters) - acked0,
                           "pending_at_end": len(server.grants.pending)})
        stop.set()
        for _ in range(200):   # every grant made is stored and acknowledged, or given up (bounded: 10 s)
            if not server.grants.pending:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)   # the last xp messages reach the clients
        started = int(server.metrics.grants._value.get())
        failures = {why: int(server.metrics.grant_failures.labels(why)._value.get())
                    for why in ("final", "gave_up", "overflow", "shutdown")}
        retries = {kind: int(server.metrics.grant_retries.labels(kind)._value.get())
                   for kind in ("failed", "in_doubt")}
        left_pending = len(server.grants.pending)
        internal = sum(len(h.internal) for h in hunters)
        acked = {name: [x for _, x in h.acked] for name, h in zip(NAMES, hunters, strict=True)}
    finally:
        await stop_hunting(stop, tasks, clients)
        if server is not None:
            await server.stop()

    try:
        store = await open_store(url)
        try:
            stored = {}
            for name in NAMES:
                rec = await store.get(Key("game", "characters", name))
                assert rec is not None
                stored[name] = (int(rec.bins["xp"]), list(rec.bins["grants"]))
        finally:
            await store.close()
    finally:
        cluster.stop()

    lost = {name: len(acked[name]) - len(stored[name][1]) for name in NAMES
            if len(acked[name]) > len(stored[name][1])}
    lost_xp = {name: max(acked[name]) - stored[name][0] for name in NAMES
               if acked[name] and max(acked[name]) > stored[name][0]}
    total_acked = sum(len(v) for v in acked.values())
    total_stored = sum(len(v[1]) for v in stored.values())
    print(f"\nreplicas={replicas}, {ROUNDS} master kills: rounds {rounds}; grants started {started}, "
          f"acknowledged {total_acked}, stored {total_stored}; retries {retries}; not stored {failures}; "
          f"error internal {internal}; pending left {left_pending}; "
          f"LOST (acknowledged, not stored): {sum(lost.values())} grants {lost or ''} xp {lost_xp or ''}")

    assert all(r["kills_during_failover"] > 0 for r in rounds), "players kept killing during each failover"
    assert internal == 0 and not any(failures.values()), "no grant ended without its xp"
    assert left_pending == 0 and total_acked == started, "every grant made was acknowledged once"
    for name, (xp, grants) in stored.items():
        assert len(set(grants)) == len(grants) and xp == XP * len(grants), f"{name}: a grant applied twice"
    if replicas:
        for name, (xp, grants) in stored.items():
            assert len(grants) == len(acked[name]), f"{name}: {len(grants)} stored, {len(acked[name])} acked"
            assert xp == max(acked[name]), f"{name}: acknowledged xp {max(acked[name])} but stored {xp}"
