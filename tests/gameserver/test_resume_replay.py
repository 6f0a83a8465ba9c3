"""Resume without losing a message (issue 13), on one node, through real sockets.

A's socket is cut under it (``transport.abort()``: the server sees a dropped connection, not a close); what
the session was sent meanwhile is numbered and kept; a ``resume`` with A's last ``seq`` gets ``welcome``
(``recovered``), ``joined``, exactly the missed messages in order with their original ``seq`` and fields,
then live ones. Too old a ``seq`` is ``recovered: false`` and nothing is replayed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gameserver.app import GameServer

from .conftest import Raw

pytestmark = pytest.mark.timeout(60)


def numbered(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [msg for msg in msgs if "seq" in msg]


async def read_until(c: Raw, done: Any, wait: float = 5.0) -> list[dict[str, Any]]:
    """Every message (ticks dropped) until ``done(msg)`` holds for one, within ``wait`` seconds."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(wait):
        while True:
            msg = await c.recv(wait)
            if msg["t"] != "tick":
                got.append(msg)
                if done(msg):
                    return got


async def detached(server: GameServer, session_id: str) -> None:
    """Wait (bounded) until the server noticed the drop and detached the session."""
    for _ in range(200):
        session = server.registry.get(session_id)
        if session is not None and session.link is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never noticed the dropped socket")


async def two_in_arena(server: GameServer, clients: Any, a_name: str, b_name: str) -> tuple[Raw, Raw, dict]:
    a: Raw = await clients(server)
    welcome, _ = await a.login(a_name)
    await a.request({"t": "join", "room": "arena"})
    b: Raw = await clients(server)
    await b.login(b_name)
    await b.request({"t": "join", "room": "arena"})
    return a, b, welcome


async def test_resume_replays_chats_and_xp_missed_while_cut_once_each_in_order_then_live(
        start_server: Any, clients: Any) -> None:
    server = await start_server(auth={"grace_seconds": 10.0})
    a, b, welcome = await two_in_arena(server, clients, "cutter", "chatter")
    hit = await a.request({"t": "attack", "mob": 1})            # A hits the mob B will kill
    assert hit["hp"] == 20
    last = max(m["seq"] for m in numbered([hit, *a.buffer]))

    a.ws.transport.abort()
    await detached(server, welcome["session"])
    said = [f"line {i}" for i in range(5)]
    for text in said:
        await b.send({"t": "chat", "text": text})
    b_chats = await read_until(b, lambda m: m["t"] == "chat" and m["text"] == said[-1])
    b_chats = [m for m in b_chats if m["t"] == "chat"]
    assert [m["text"] for m in b_chats] == said
    for _ in range(2):                                            # B kills it: A gets xp, detached
        await b.request({"t": "attack", "mob": 1})
    await b.expect("xp")
    session = server.registry.get(welcome["session"])
    assert session is not None and session.replay.last == last + 6

    a2: Raw = await clients(server)
    back = await a2.request({"t": "resume", "token": welcome["token"], "seq": last})
    assert back["t"] == "welcome" and back["session"] == welcome["session"]
    assert back["recovered"] is True and back["replay"] == 6 and "seq" not in back
    await b.send({"t": "chat", "text": "live"})
    got = await read_until(a2, lambda m: m["t"] == "chat" and m["text"] == "live")
    assert got[0]["t"] == "joined" and "seq" not in got[0]
    replayed, live = got[1:7], got[7:]
    assert [m["seq"] for m in replayed] == list(range(last + 1, last + 7))
    assert [m["t"] for m in replayed] == ["chat"] * 5 + ["xp"]
    for mine, theirs in zip(replayed, b_chats, strict=False):   # the same message: fields, ts included
        assert {**mine, "seq": 0} == {**theirs, "seq": 0}
    assert replayed[5] == {"t": "xp", "gained": 7, "xp": 7, "level": 1, "reason": "kill:1", "seq": last + 6}
    assert [(m["t"], m["text"], m["seq"]) for m in live] == [("chat", "live", last + 7)]
    assert server.metrics.replayed._value.get() == 6
    assert server.metrics.resumes.labels("recovered")._value.get() == 1


async def test_resume_with_a_seq_older_than_the_buffer_is_unrecovered_and_replays_nothing(
        start_server: Any, clients: Any) -> None:
    server = await start_server(auth={"grace_seconds": 10.0}, replay={"max_messages": 3})
    a, b, welcome = await two_in_arena(server, clients, "oldseq", "talker")
    await b.send({"t": "chat", "text": "before"})
    seen = numbered(await read_until(a, lambda m: m["t"] == "chat" and m["text"] == "before"))
    last = seen[-1]["seq"]

    a.ws.transport.abort()
    await detached(server, welcome["session"])
    for i in range(5):                                            # 5 > max_messages: the oldest are gone
        await b.send({"t": "chat", "text": f"missed {i}"})
    await b.expect("chat", text="missed 4")

    a2: Raw = await clients(server)
    back = await a2.request({"t": "resume", "token": welcome["token"], "seq": last})
    assert back["recovered"] is False and back["replay"] == 0
    await b.send({"t": "chat", "text": "after"})
    got = await read_until(a2, lambda m: m["t"] == "chat" and m["text"] == "after")
    assert [m["t"] for m in got] == ["joined", "chat"]          # nothing replayed, not even the kept 3
    assert got[1]["seq"] == last + 6                            # numbering went on: the gap was announced
    assert server.metrics.resumes.labels("unrecovered")._value.get() == 1


async def test_resume_with_the_last_seq_replays_nothing_and_numbering_goes_on(
        start_server: Any, clients: Any) -> None:
    server = await start_server(auth={"grace_seconds": 10.0})
    a, _b, welcome = await two_in_arena(server, clients, "uptodate", "quiet")
    profile = await a.request({"t": "me"})
    a.ws.transport.abort()
    await detached(server, welcome["session"])
    a2: Raw = await clients(server)
    back = await a2.request({"t": "resume", "token": welcome["token"], "seq": profile["seq"]})
    assert back["recovered"] is True and back["replay"] == 0
    assert (await a2.expect("joined"))["room"] == "arena"
    assert (await a2.request({"t": "me"}))["seq"] == profile["seq"] + 1


async def test_v1_resume_without_seq_replays_nothing(start_server: Any, clients: Any) -> None:
    server = await start_server(auth={"grace_seconds": 10.0})
    a, b, welcome = await two_in_arena(server, clients, "oldclient", "speaker")
    a.ws.transport.abort()
    await detached(server, welcome["session"])
    await b.send({"t": "chat", "text": "unseen"})
    await b.expect("chat", text="unseen")
    a2: Raw = await clients(server)
    back = await a2.request({"t": "resume", "token": welcome["token"]})
    assert "recovered" not in back and "replay" not in back
    await b.send({"t": "chat", "text": "seen"})
    got = await read_until(a2, lambda m: m["t"] == "chat")
    assert [m.get("text") for m in got if m["t"] == "chat"] == ["seen"]
    assert server.metrics.resumes.labels("v1")._value.get() == 1


async def test_replay_in_the_other_encoding_is_the_same_message(start_server: Any, clients: Any) -> None:
    """Cut on a msgpack socket, resumed on a JSON one: the kept body is encoded again, same fields."""
    server = await start_server(auth={"grace_seconds": 10.0})
    a, b, welcome = await two_in_arena(server, clients, "switcher", "writer")
    a.ws.transport.abort()
    await detached(server, welcome["session"])
    await b.send({"t": "chat", "text": "é \U0001f332 ok"})
    theirs = await b.expect("chat")
    a2: Raw = await clients(server, binary=False)
    back = await a2.request({"t": "resume", "token": welcome["token"], "seq": 0})
    assert back["recovered"] is True and back["replay"] == 1
    await a2.expect("joined")
    frame = await a2.recv_frame()
    while isinstance(frame, str) and '"t":"tick"' in frame:
        frame = await a2.recv_frame()
    assert frame == f'{{"t":"chat","from":"writer","text":"é \U0001f332 ok","ts":{theirs["ts"]!r},"seq":1}}'
