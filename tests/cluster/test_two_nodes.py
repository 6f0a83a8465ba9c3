"""Two GameServer nodes in one process sharing one Redis (or one LocalHub), with bots on both.

Checks: a join for a room owned by the other node is redirected and lands there with the same session;
a login of a character live on the other node replaces it (``bye replaced``); ``top`` / ``me`` on either node
see grants from both; concurrent grants from both nodes to one character lose nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gameserver.app import GameServer
from gameserver.cluster.local import LocalBackend, LocalHub
from shared.client import GameClient
from tests.support import FAST_RULES, SECRET, server_config

MOBS = [{"id": i, "kind": "slime", "x": 100.0 + 5 * i, "y": 100.0, "hp": 30, "xp": 7} for i in range(1, 4)]

pytestmark = pytest.mark.timeout(60)


def node_config(name: str, store_url: str, redis_url: str | None, prefix: str) -> Any:
    return server_config(
        auth={"grace_seconds": 3.0},
        game={"tick_rate": 50.0, "rules": FAST_RULES},
        rooms=[{"name": "town"}, {"name": "arena", "width": 200.0, "height": 200.0, "mobs": MOBS},
               {"name": "field"}],
        store={"url": store_url},
        persist={"flush_interval": 0.2},
        cluster={"node_id": name, "redis_url": redis_url, "prefix": prefix, "lease_ttl": 2.0,
                 "renew_interval": 0.5, "handoff_timeout": 2.0},
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
    else:
        await asyncio.to_thread(redis_server.flush)


def ws(server: GameServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def test_redirects_replace_and_shared_xp_across_two_nodes(nodes: tuple[GameServer, GameServer]) -> None:
    a, b = nodes
    tag = uuid.uuid4().hex[:5]
    clients: list[GameClient] = []

    async def bot(server: GameServer, name: str) -> GameClient:
        c = await GameClient.connect(ws(server), timeout=8.0)
        clients.append(c)
        await c.login(f"{name}_{tag}", SECRET)
        return c

    try:
        # town goes to A (first login there); B then takes the arena
        a_bots = [await bot(a, f"a{i}") for i in range(3)]
        assert a.cluster.owns("town")
        assert await b.cluster.ensure_room("arena") is None and b.cluster.owns("arena")

        # a login on B whose room (town) is A's: redirected to A, same session
        b_bots = [await bot(b, f"b{i}") for i in range(3)]
        for c in b_bots:
            assert c.redirects == 1 and c.url == ws(a) and c.character is not None
            assert a.registry.get(c.session or "") is not None
        # join of the arena (B's) from A: redirected, same session, lands in the arena on B
        for c in b_bots:
            session = c.session
            joined = await c.join("arena")
            assert joined.room == "arena" and c.session == session and c.url == ws(b)
            assert b.registry.get(session or "") is not None and a.registry.get(session or "") is None
        assert len(a.registry) == 3 and len(b.registry) == 3
        assert not a.cluster.owns("arena") and not b.cluster.owns("town")

        # a kill on B: xp arrives; top from a bot on A sees it
        killer = b_bots[0]
        hit = None
        for _ in range(5):
            hit = await killer.attack(1)
            if hit.hp == 0:
                break
        assert hit is not None and hit.hp == 0
        xp = await killer.expect("xp", timeout=5.0)
        assert xp.xp == 7
        name0 = killer.character.name if killer.character else ""
        top = await a_bots[0].top(100)
        assert {"name": name0, "level": 1, "xp": 7} in [e.model_dump() for e in top.entries]

        # grants from both nodes, concurrently, to one character (live on A): nothing lost
        target = a_bots[1].character.name if a_bots[1].character else ""
        grants = [a.grant_xp(target, 3, f"ga{i}-{tag}") for i in range(20)]
        grants += [b.grant_xp(target, 5, f"gb{i}-{tag}") for i in range(20)]
        await asyncio.gather(*grants)
        # retried grants (same ids) are applied once
        await asyncio.gather(a.grant_xp(target, 3, f"ga0-{tag}"), b.grant_xp(target, 5, f"gb0-{tag}"))
        assert (await a_bots[1].me()).character.xp == 160
        for c in (a_bots[0], b_bots[1]):
            entries = {e.name: e.xp for e in (await c.top(100)).entries}
            assert entries[target] == 160 and entries[name0] == 7
        # profile on B of a character granted on A only
        await a.grant_xp(b_bots[2].character.name if b_bots[2].character else "", 11, f"gx-{tag}")
        assert (await b_bots[2].me()).character.xp == 11

        # the same character logs in on the other node: the old session (on B, arena) gets bye replaced
        old = b_bots[1]
        again = await GameClient.connect(ws(a), timeout=8.0)
        clients.append(again)
        welcome = await again.login(old.character.name if old.character else "", SECRET)
        bye = await old.expect("bye", timeout=5.0)
        assert bye.reason == "replaced"
        assert welcome.session != old.session
        assert again.character is not None and again.character.room == "arena"
        assert again.url == ws(b)            # the arena lives on B: the new session went there too
        assert b.registry.by_name(welcome.character.name).id == welcome.session  # type: ignore[union-attr]
        # everyone still answers
        for c in [*a_bots, *b_bots[:1], b_bots[2], again]:
            await c.ping()
    finally:
        for c in clients:
            await c.close()
