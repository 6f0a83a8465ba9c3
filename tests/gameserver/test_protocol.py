"""The whole protocol over real sockets: every message type, every error code, rid echo, both encodings."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import SECRET, Raw


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
async def test_every_client_message_gets_its_answer_with_rid(server, clients, binary):
    c: Raw = await clients(server, binary=binary)
    welcome, joined = await c.login("alice")
    assert welcome["rid"] == 1 and welcome["protocol"] == 1 and welcome["tick_rate"] == 50.0
    assert welcome["character"] == {"name": "alice", "level": 1, "xp": 0, "room": "town",
                                    "x": 500.0, "y": 500.0}
    assert welcome["session"] and welcome["token"]
    assert joined["room"] == "town" and joined["bounds"] == [1000.0, 1000.0]
    assert joined["players"] == [[joined["you"], "alice", 500.0, 500.0]] and joined["mobs"] == []

    pong = await c.request({"t": "ping"})
    assert pong["t"] == "pong" and pong["ts"] > 1e9

    j = await c.request({"t": "join", "room": "arena"})
    assert j["t"] == "joined" and j["room"] == "arena" and j["bounds"] == [200.0, 200.0]
    assert sorted(m[0] for m in j["mobs"]) == [1, 2, 3] and [j["you"], "alice", 100.0, 100.0] in j["players"]

    await c.send({"t": "move", "x": 101.0, "y": 102.0})
    tick = await c.expect("tick")
    assert "rid" not in tick and tick["n"] > 0 and [j["you"], 101.0, 102.0] in tick["moved"]

    hit = await c.request({"t": "attack", "mob": 1})
    assert hit["t"] == "hit" and hit["mob"] == 1 and hit["dmg"] == 10 and hit["hp"] == 20

    await c.send({"t": "chat", "text": "hello room"})
    chat = await c.expect("chat")
    assert chat["from"] == "alice" and chat["text"] == "hello room" and "rid" not in chat

    me = await c.request({"t": "me"})
    assert me["t"] == "profile" and me["kills"] == 0
    assert me["character"]["room"] == "arena" and me["character"]["x"] == 101.0

    top = await c.request({"t": "top", "n": 5})
    assert top["t"] == "top" and {"name": "alice", "level": 1, "xp": 0} in top["entries"]

    left = await c.request({"t": "leave"})
    assert left == {"t": "left", "room": "arena", "rid": left["rid"], "seq": 5}   # hit, chat, profile, top


async def test_server_answers_in_the_encoding_of_the_first_frame(server, clients):
    text = await clients(server, binary=False)
    await text.send({"t": "ping", "rid": 1})
    assert isinstance(await text.recv_frame(), str)
    text.binary = True                      # binary after text: still understood, still answered in JSON
    await text.send({"t": "ping", "rid": 2})
    frame = await text.recv_frame()
    assert isinstance(frame, str) and '"rid":2' in frame
    binary = await clients(server, binary=True)
    await binary.send({"t": "ping", "rid": 1})
    assert isinstance(await binary.recv_frame(), bytes)


async def test_kill_sends_hit_zero_then_xp_and_level_up(server, clients):
    a: Raw = await clients(server)
    await a.login("killer")
    await a.request({"t": "join", "room": "arena"})
    hps = [(await a.request({"t": "attack", "mob": 2}))["hp"] for _ in range(3)]
    assert hps == [20, 10, 0]
    xp = await a.expect("xp")
    assert xp == {"t": "xp", "gained": 7, "xp": 7, "level": 1, "reason": "kill:2", "seq": 4}   # after 3 hits
    me = await a.request({"t": "me"})
    assert me["kills"] == 1 and me["character"]["xp"] == 7
    # level_up: grant enough XP to reach level 2 (100 xp) through the server's grant path
    await server.grant_xp("killer", 93, "test-level-up")
    assert (await a.expect("xp"))["level"] == 2
    assert await a.expect("level_up") == {"t": "level_up", "name": "killer", "level": 2, "seq": 7}


async def test_every_error_code_with_rid_echo(server, clients):
    c: Raw = await clients(server)

    async def error(msg):
        reply = await c.request(msg)
        assert reply["t"] == "error" and reply["rid"] == c.rid and reply["message"], reply
        return reply["code"]

    assert await error({"t": "me"}) == "not_logged_in"
    assert await error({"t": "bogus"}) == "unknown_type"
    assert await error({"t": "login", "name": "x", "secret": SECRET}) == "bad_message"
    await c.login("errbob")
    assert await error({"t": "login", "name": "errbob", "secret": "wrong-wrong-wrong-wrong"}) == "auth_failed"
    assert await error({"t": "resume", "token": "forged.token"}) == "bad_token"
    assert await error({"t": "join", "room": "mars"}) == "no_such_room"
    await c.request({"t": "join", "room": "arena"})
    assert await error({"t": "attack", "mob": 99}) == "no_such_mob"
    assert await error({"t": "attack", "mob": 3}) == "out_of_range"
    await c.request({"t": "leave"})
    assert await error({"t": "move", "x": 1, "y": 1}) == "not_in_room"
    assert await error({"t": "leave"}) == "not_in_room"
    assert await error({"t": "chat", "text": "anyone?"}) == "not_in_room"
    # bad_frame has no decodable rid
    await c.ws.send(b"\xc1\xc1")
    reply = await c.recv()
    assert reply["t"] == "error" and reply["code"] == "bad_frame" and "rid" not in reply


async def test_cooldown_error(start_server, clients):
    server = await start_server(game={"rules": {"attack_cooldown": 10.0}})
    c: Raw = await clients(server)
    await c.login("cool")
    await c.request({"t": "join", "room": "arena"})
    assert (await c.request({"t": "attack", "mob": 1}))["t"] == "hit"
    reply = await c.request({"t": "attack", "mob": 1})
    assert reply["code"] == "cooldown" and reply["rid"] == c.rid


async def test_rate_limited_error_and_internal_error(start_server, clients):
    server = await start_server(limits={"rate_per_sec": 5, "rate_burst": 5})
    c: Raw = await clients(server)
    for i in range(8):
        await c.send({"t": "ping", "rid": 100 + i})
    got = [await c.recv() for _ in range(6)]
    assert [m["t"] for m in got[:5]] == ["pong"] * 5
    assert got[5]["t"] == "error" and got[5]["code"] == "rate_limited" and got[5]["rid"] == 105
    # internal: an unexpected exception in a handler is answered generically, never with a traceback
    c2: Raw = await clients(server)
    server.router.handlers["ping"] = (_boom, False)
    reply = await c2.request({"t": "ping"})
    assert reply["code"] == "internal"
    assert "Traceback" not in reply["message"] and "kaboom" not in reply["message"]
    server.router.handlers["ping"] = (_pong_ok, False)
    assert (await c2.request({"t": "ping"}))["t"] == "pong"


async def _boom(link, msg):
    raise RuntimeError("kaboom")


async def _pong_ok(link, msg):
    link.send({"t": "pong", "ts": 1.0, "rid": msg.rid})


async def test_tick_only_when_something_changed_and_others_see_moves(server, clients):
    a: Raw = await clients(server)
    b: Raw = await clients(server)
    await a.login("watcher")
    _, jb = await b.login("walker")
    joined = await a.expect("tick")
    assert [jb["you"], "walker", 500.0, 500.0] in joined.get("joined", [])
    await asyncio.sleep(0.1)    # the speed limit counts from the join: 0.1 s = 30 units
    await b.send({"t": "move", "x": 510.0, "y": 500.0})
    tick = await a.expect("tick")
    assert [jb["you"], 510.0, 500.0] in tick["moved"]
    with pytest.raises(TimeoutError):   # nothing changes: no frame
        async with asyncio.timeout(0.3):
            while True:
                msg = await a.recv()
                assert msg["t"] != "tick", msg


async def test_join_sent_right_after_login_is_applied_after_the_login_placement(server, clients):
    """Rooms tick independently: a join (and inputs) sent before the login's `joined` arrives must still
    land after the login placement, so the player ends up in the room it asked for, replies in order."""
    for i in range(10):
        c: Raw = await clients(server)
        await c.send({"t": "login", "name": f"eager{i}", "secret": SECRET, "rid": 1})
        await c.send({"t": "join", "room": "arena", "rid": 2})
        await c.send({"t": "move", "x": 101.0, "y": 100.0})
        await c.send({"t": "attack", "mob": 1, "rid": 3})
        welcome = await c.expect("welcome")
        first = await c.expect("joined")
        second = await c.expect("joined")
        assert welcome["rid"] == 1
        assert first["room"] == "town" and "rid" not in first
        assert second["room"] == "arena" and second["rid"] == 2
        reply = await c.recv()
        while reply.get("t") == "tick":
            reply = await c.recv()
        # the attack was applied in arena (mob 1 may be dead from an earlier round), never "not_in_room"
        assert reply["rid"] == 3 and (reply["t"] == "hit" or reply["code"] == "no_such_mob"), reply
        me = await c.request({"t": "me"})
        assert me["character"]["room"] == "arena"
        await c.close()
