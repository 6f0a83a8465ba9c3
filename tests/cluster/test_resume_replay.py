"""Resume without losing a message across the nodes of a two-node cluster (one LocalHub, or one Redis).

A's socket is cut on node A; what it was sent meanwhile (5 chats, the ``xp`` of a kill it had hit) travels
with the hand-off: resumed on node B, which hands the session back to A where its room lives (a
``redirect``), or on B after A stopped gracefully (B takes the room over), the ``welcome`` says
``recovered: true`` and exactly those messages follow the ``joined``, in order, once each, then live ones.
(A node that dies keeps its buffers: ``tests/cluster/test_failover.py`` checks ``recovered: false``.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gameserver.app import GameServer
from gameserver.cluster.local import LocalBackend, LocalHub
from gameserver.config import ServerConfig, build_config, deep_merge
from tests.gameserver.conftest import Raw
from tests.support import SECRET

from .test_two_nodes import node_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["local", "redis"])
async def make_nodes(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Any]:
    """``await make_nodes(**config_overrides)`` -> nodes A and B, started; stopped at teardown."""
    servers: list[GameServer] = []
    store: Any = None
    redis_server: Any = None

    async def make(**overrides: Any) -> tuple[GameServer, GameServer]:
        nonlocal store, redis_server
        if request.param == "local":
            from datastore import open_store
            store = await open_store("memory://")
            hub = LocalHub()
            for name in ("A", "B"):
                cfg = with_overrides(node_config(name, "memory://", None, prefix), overrides)
                servers.append(GameServer(cfg, store=store, cluster=LocalBackend(hub)))
        else:
            redis_server = request.getfixturevalue("redis_single")
            for name in ("A", "B"):
                url = redis_server.url()
                servers.append(GameServer(with_overrides(node_config(name, url, url, prefix), overrides)))
        for s in servers:
            await s.start()
        return servers[0], servers[1]

    yield make
    for s in servers:
        await s.stop(grace=2.0)
    if store is not None:
        await store.close()
    if redis_server is not None:
        await asyncio.to_thread(redis_server.flush)


def with_overrides(config: ServerConfig, overrides: dict[str, Any]) -> ServerConfig:
    return build_config(deep_merge(config.model_dump(), overrides)) if overrides else config


async def read_until(c: Raw, done: Any, wait: float = 8.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(wait):
        while True:
            msg = await c.recv(wait)
            if msg["t"] != "tick":
                got.append(msg)
                if done(msg):
                    return got


async def until(check: Any, what: str) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def cut_while_room_talks(a_node: GameServer, tag: str) -> tuple[Raw, dict[str, Any], int, list[dict]]:
    """P and Q in the arena on ``a_node``; P hits mob 1, P's socket is cut, Q says 5 lines and kills mob 1
    (P gets its xp while detached). Returns (Q, P's welcome, P's last seq, Q's chats)."""
    p = await Raw.connect(a_node)
    welcome, _ = await p.login(f"p_{tag}", SECRET)
    await p.request({"t": "join", "room": "arena"})
    q = await Raw.connect(a_node)
    await q.login(f"q_{tag}", SECRET)
    await q.request({"t": "join", "room": "arena"})
    hit = await p.request({"t": "attack", "mob": 1})
    last = hit["seq"]
    p.ws.transport.abort()
    session = a_node.registry.get(welcome["session"])
    assert session is not None
    await until(lambda: session.link is None, "the drop to be noticed")
    for i in range(5):
        await q.send({"t": "chat", "text": f"missed {i}"})
    chats = [m for m in await read_until(q, lambda m: m.get("text") == "missed 4") if m["t"] == "chat"]
    for _ in range(2):
        await q.request({"t": "attack", "mob": 1})
    await until(lambda: session.replay.last == last + 6, "P's xp")
    return q, welcome, last, chats


def check_replay(got: list[dict[str, Any]], last: int, chats: list[dict[str, Any]], xp: bool = True) -> None:
    assert got[0]["t"] == "joined" and got[0]["room"] == "arena"
    n = 6 if xp else 5
    replayed = got[1:1 + n]
    assert [m["seq"] for m in replayed] == list(range(last + 1, last + 1 + n))
    for mine, theirs in zip(replayed[:5], chats, strict=True):
        assert {**mine, "seq": 0} == {**theirs, "seq": 0}        # the same message, ts included
    if xp:
        assert replayed[5]["t"] == "xp" and replayed[5]["reason"] == "kill:1"


async def test_resume_on_the_other_node_replays_through_the_hand_off(make_nodes: Any) -> None:
    a, b = await make_nodes()
    tag = uuid.uuid4().hex[:5]
    q, welcome, last, chats = await cut_while_room_talks(a, tag)
    p2 = await Raw.connect(b)
    try:
        redirect = await p2.request({"t": "resume", "token": welcome["token"], "seq": last})
        assert redirect["t"] == "redirect" and redirect["url"] == f"ws://127.0.0.1:{a.port}/ws"
        p3 = await Raw.connect(a)
        try:
            back = await p3.request({"t": "resume", "token": redirect["token"], "seq": last})
            assert back["session"] == welcome["session"]
            assert back["recovered"] is True and back["replay"] == 6
            got = await read_until(p3, lambda m: m.get("seq") == last + 6)
            check_replay(got, last, chats)
            await q.send({"t": "chat", "text": "live"})
            live = await read_until(p3, lambda m: m.get("text") == "live")
            assert [(m["t"], m["seq"]) for m in live] == [("chat", last + 7)]
        finally:
            await p3.close()
    finally:
        await p2.close()
        await q.close()


async def test_resume_on_the_survivor_after_a_graceful_stop_replays_what_the_stopped_node_kept(
        make_nodes: Any) -> None:
    a, b = await make_nodes()
    tag = uuid.uuid4().hex[:5]
    q, welcome, last, chats = await cut_while_room_talks(a, tag)
    await q.close()
    await a.stop(grace=2.0)
    p2 = await Raw.connect(b)
    try:
        back = await p2.request({"t": "resume", "token": welcome["token"], "seq": last})
        assert back["t"] == "welcome" and back["session"] == welcome["session"]
        assert back["recovered"] is True and back["replay"] == 6
        got = await read_until(p2, lambda m: m.get("seq") == last + 6)
        check_replay(got, last, chats)
        assert b.cluster.owns("arena")
        assert (await p2.request({"t": "me"}))["seq"] == last + 7
    finally:
        await p2.close()


async def test_resume_elsewhere_with_a_seq_older_than_the_buffer_is_unrecovered(make_nodes: Any) -> None:
    a, b = await make_nodes(replay={"max_messages": 3})
    tag = uuid.uuid4().hex[:5]
    q, welcome, last, _chats = await cut_while_room_talks(a, tag)   # 6 missed, 3 kept
    await q.close()
    await a.stop(grace=2.0)
    p2 = await Raw.connect(b)
    try:
        back = await p2.request({"t": "resume", "token": welcome["token"], "seq": last})
        assert back["session"] == welcome["session"]
        assert back["recovered"] is False and back["replay"] == 0
        assert (await p2.expect("joined"))["room"] == "arena"
        profile = await p2.request({"t": "me"})
        assert profile["seq"] == last + 7                      # numbering went on past the lost ones
        assert [m for m in p2.buffer if "seq" in m] == []      # nothing replayed
    finally:
        await p2.close()
