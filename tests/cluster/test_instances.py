"""Room instances over two nodes sharing one Redis (or one LocalHub): simultaneous joins spread over both
nodes never overfill an instance, never create twins, and land every player in exactly one instance."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gameserver.app import GameServer
from gameserver.cluster.local import LocalBackend, LocalHub
from shared.client import GameClient
from tests.support import SECRET, server_config

pytestmark = pytest.mark.timeout(90)


def node_config(name: str, store_url: str, redis_url: str | None, prefix: str) -> Any:
    return server_config(
        auth={"grace_seconds": 3.0},
        rooms=[{"name": "town"}, {"name": "arena", "width": 200.0, "height": 200.0, "max_players": 8}],
        store={"url": store_url},
        cluster={"node_id": name, "redis_url": redis_url, "prefix": prefix, "lease_ttl": 2.0,
                 "renew_interval": 0.5, "handoff_timeout": 2.0, "rooms": ["town"] if name == "A" else []},
    )


@pytest.fixture(params=["local", "redis"])
async def nodes(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[tuple[GameServer, GameServer]]:
    servers: list[GameServer] = []
    if request.param == "local":
        from datastore import open_store
        store = await open_store("memory://")
        hub = LocalHub()
        for name in ("A", "B"):
            servers.append(GameServer(node_config(name, "memory://", None, prefix), store=store,
                                      cluster=LocalBackend(hub)))
    else:
        redis_server = request.getfixturevalue("redis_single")
        for name in ("A", "B"):
            servers.append(GameServer(node_config(name, redis_server.url(), redis_server.url(), prefix)))
    for s in servers:
        await s.start()
    yield servers[0], servers[1]
    for s in servers:
        await s.stop(grace=2.0)
    if request.param == "local":
        await store.close()


async def test_100_joins_over_two_nodes_fill_13_instances_none_above_8(nodes) -> None:
    a, b = nodes
    tag = uuid.uuid4().hex[:4]

    async def player(i: int) -> GameClient:
        server = a if i % 2 else b
        c = await GameClient.connect(f"ws://127.0.0.1:{server.port}/ws", timeout=15.0)
        await c.login(f"n{i}_{tag}", SECRET)
        return c

    clients = list(await asyncio.gather(*(player(i) for i in range(100))))
    try:
        joined = await asyncio.gather(*(c.join("arena") for c in clients))
        per_instance = collections.Counter(j.room for j in joined)
        assert len(per_instance) == 13 and max(per_instance.values()) == 8, per_instance
        await asyncio.sleep(0.3)
        members: dict[str, int] = collections.Counter()
        for server in (a, b):
            for name, runner in server.runners.items():
                if runner.kind == "arena" and runner.running:
                    assert name not in members, f"{name} runs on both nodes"
                    members[name] = len(runner.members)
        assert members == per_instance                              # every client in exactly one
        assert {name for s in (a, b) for name, r in s.runners.items() if r.running and r.members} >= {"arena"}
        listing = await clients[0].rooms("arena")
        assert sorted(e.players for e in listing.entries) == [4] + [8] * 12
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
