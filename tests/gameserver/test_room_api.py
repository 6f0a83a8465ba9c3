"""The game-author API end to end: a room type written as a class, run by a real server, played by real
websocket clients (``GameClient.request`` / ``send``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from gameserver.config import ConfigError
from shared.client import GameClient, ServerError
from tests.gameserver import sample_rooms
from tests.gameserver.conftest import SECRET, url

TOWN = {"name": "town", "width": 1000.0, "height": 1000.0}
ECHO = {"name": "echo-1", "type": "tests.gameserver.sample_rooms:EchoRoom", "options": {"greeting": "hello"}}


def rooms(*extra: dict) -> list[dict]:
    return [TOWN, *extra]


async def player(server, name: str) -> GameClient:
    c = await GameClient.connect(url(server), timeout=5.0)
    await c.login(name, SECRET)
    return c


async def next_of(c: GameClient, t: str, wait: float = 5.0):
    return await c.expect(t, timeout=wait)


async def test_join_hooks_replies_and_broadcasts_of_a_room_type(start_server):
    server = await start_server(rooms=rooms(ECHO))
    room = server.runners["echo-1"].room
    assert room.created == ("echo-1", {"greeting": "hello"})
    a, b = await player(server, "alice"), await player(server, "bob")
    try:
        joined = await a.join("echo-1")
        assert joined.room == "echo-1" and joined.greeting == "hello" and joined.count == 1
        assert joined.you == next(p.id for p in room.players.values() if p.name == "alice")
        assert (await b.join("echo-1")).count == 2

        reply = await a.request("say", text="hi there")
        assert (reply.t, reply.text, reply.you) == ("echo", "hi there", joined.you)

        await a.send("say", text="to everyone", to_all=True)
        for c in (a, b):
            said = await next_of(c, "said")
            assert (said.by, said.text) == (joined.you, "to everyone") and said.rid is None

        await b.send("shout", text="not to me")                   # exclude=the sender
        assert (await next_of(a, "said")).text == "not to me"
        await b.send("say", text="ping back")                     # b's next own message is its echo, not
        assert (await next_of(b, "echo")).text == "ping back"     # the shout it excluded itself from
    finally:
        await a.close()
        await b.close()


async def test_bad_unknown_and_refused_messages_get_clear_errors(start_server):
    server = await start_server(rooms=rooms(ECHO))
    c = await player(server, "carol")
    try:
        with pytest.raises(ServerError) as err:
            await c.request("say", text="x")                      # in town: the built-in game has no say
        assert err.value.code == "unknown_type"
        await c.leave()
        with pytest.raises(ServerError) as err:
            await c.request("say", text="x")                      # known to echo rooms, but in no room
        assert err.value.code == "not_in_room"
        await c.join("echo-1")
        with pytest.raises(ServerError) as err:
            await c.request("say", text="")
        assert err.value.code == "bad_message" and "text" in err.value.message
        with pytest.raises(ServerError) as err:
            await c.request("say", text=5)
        assert err.value.code == "bad_message" and err.value.message.startswith("text:")
        with pytest.raises(ServerError) as err:
            await c.request("dance")
        assert err.value.code == "unknown_type"
        with pytest.raises(ServerError) as err:
            await c.request("move", x=1.0, y=2.0)                 # the built-in game's, not this room's
        assert err.value.code == "unknown_type"
        with pytest.raises(ServerError) as err:
            await c.request("say", text="refuse")
        assert (err.value.code, err.value.message) == ("not_allowed", "that word is not allowed")
        assert (await c.request("say", text="still fine")).text == "still fine"
    finally:
        await c.close()


async def test_a_handler_that_raises_answers_internal_and_the_room_keeps_ticking(start_server):
    server = await start_server(rooms=rooms(ECHO))
    runner = server.runners["echo-1"]
    a, b = await player(server, "dave"), await player(server, "erin")
    try:
        await a.join("echo-1")
        await b.join("echo-1")
        before = runner.room.ticks
        with pytest.raises(ServerError) as err:
            await a.request("boom")
        assert err.value.code == "internal"
        assert "kaboom" not in err.value.message and "Traceback" not in err.value.message
        errors = server.metrics.room_errors.labels("echo-1", "boom")._value.get()
        assert errors == 1
        assert (await b.request("say", text="alive")).text == "alive"
        assert (await a.request("say", text="me too")).text == "me too"
        await asyncio.sleep(0.2)
        assert runner.room.ticks > before + 2                       # ticking on
    finally:
        await a.close()
        await b.close()


async def test_on_tick_runs_every_tick_at_the_room_types_rate(start_server):
    server = await start_server(rooms=rooms(ECHO))
    runner = server.runners["echo-1"]
    assert runner.tick_rate == 25.0 and server.runners["town"].tick_rate == 50.0   # class attr vs [game]
    start = runner.room.ticks
    await asyncio.sleep(1.0)                                        # nobody in the room, nothing changes
    assert 18 <= runner.room.ticks - start <= 27


async def test_on_leave_for_leave_room_change_and_session_end_and_nothing_after(start_server):
    server = await start_server(rooms=rooms(ECHO), auth={"grace_seconds": 0.2})
    log = server.runners["echo-1"].room.log
    a, b, c = await player(server, "fay"), await player(server, "gus"), await player(server, "hal")
    try:
        for x in (a, b, c):
            await x.join("echo-1")
        await a.leave()
        await b.join("town")
        await c.close()                                             # socket gone: ends after the grace
        for _ in range(50):
            if ("leave", "hal") in log:
                break
            await asyncio.sleep(0.05)
        assert [e for e in log if e[0] == "leave"] == [("leave", "fay"), ("leave", "gus"), ("leave", "hal")]
        # each leaver's on_leave broadcast "gone" went to those still there, never to the leaver itself
        await a.join("echo-1")
        reply = await a.request("say", text="back")
        assert reply.text == "back"
        seen = [m for m in list(a._inbox) if getattr(m, "t", "") == "gone"]
        assert all(m.name != "fay" for m in seen)
    finally:
        await a.close()
        await b.close()


async def test_grant_xp_from_a_room_type_is_durable_and_announced(start_server):
    server = await start_server(rooms=rooms(ECHO))
    a, b = await player(server, "ivy"), await player(server, "jon")
    try:
        await a.join("echo-1")
        await b.join("echo-1")
        assert (await a.request("earn", amount=150)).amount == 150
        xp = await next_of(a, "xp")
        assert (xp.gained, xp.xp, xp.level, xp.reason) == (150, 150, 2, "earned")
        rec = await server.store.get(server.characters.key("ivy"))
        assert rec.bins["xp"] == 150 and len(rec.bins["grants"]) == 1
        up = await next_of(b, "level_up")
        assert (up.name, up.level) == ("ivy", 2)
    finally:
        await a.close()
        await b.close()


async def test_player_data_is_saved_behind_the_scenes_per_room_type_and_survives_a_restart(
        start_server, make_config):
    config = make_config(rooms=rooms(ECHO, {"name": "other", "type": sample_rooms.OtherRoom}))
    server = await start_server(config)
    c = await player(server, "kim")
    await c.join("echo-1")
    assert (await c.request("coins", add=7)).coins == 7
    await c.join("other")
    assert (await c.request("coins", add=1)).coins == 1              # its own namespace
    await asyncio.sleep(0.5)                                         # > flush_interval: written behind
    rec = await server.store.get(server.characters.key("kim"))
    assert rec.bins["data"] == {"tests.gameserver.sample_rooms:EchoRoom": {"coins": 7},
                                "tests.gameserver.sample_rooms:OtherRoom": {"coins": 1}}
    await c.close()
    await server.stop()

    again = await start_server(config)
    c = await player(again, "kim")
    try:
        await c.join("echo-1")
        assert (await c.request("coins", add=3)).coins == 10
    finally:
        await c.close()


@pytest.mark.parametrize(("room", "expected"), [
    ({"type": "tests.gameserver.no_such_module:EchoRoom"}, "room bad: cannot import type"),
    ({"type": "tests.gameserver.sample_rooms:Missing"}, "has no 'Missing'"),
    ({"type": "tests.gameserver.sample_rooms:NotARoom"}, "is not a subclass of gameserver.rooms.Room"),
    ({"type": "tests.gameserver.sample_rooms:StrictOptionsRoom", "options": {"size": 99}},
     "room bad: bad options: size"),
    ({"type": "tests.gameserver.sample_rooms:FailingCreateRoom"}, "needs a 'map' option"),
    ({"type": "not a path"}, "module:Class"),
    ({"type": "tests.gameserver.sample_rooms:EchoRoom", "width": 10.0}, "only for the built-in game"),
])
def test_a_bad_room_type_is_a_start_up_error_naming_the_room(make_config, room, expected):
    from gameserver.app import GameServer

    with pytest.raises(ConfigError, match="bad") as err:
        GameServer(make_config(rooms=rooms({"name": "bad", **room})))
    assert expected in str(err.value) and "\n" not in str(err.value).strip().split("\n")[0]


def test_a_room_type_cannot_register_a_session_layer_message():
    from pydantic import BaseModel

    from gameserver.rooms import Room, on_message

    class Text(BaseModel):
        text: str

    with pytest.raises(TypeError, match="session layer"):
        class ChatRoom(Room):
            @on_message("chat", Text)
            def chat(self, player, msg):
                return None


async def test_a_join_refused_by_on_join_leaves_the_player_outside(start_server):
    server = await start_server(rooms=rooms({"name": "broken", "type": sample_rooms.FailingJoinRoom}))
    c = await player(server, "lou")
    try:
        with pytest.raises(ServerError) as err:
            await c.join("broken")
        assert err.value.code == "internal"
        assert not server.runners["broken"].members
        assert (await c.join("town")).room == "town"
    finally:
        await c.close()


def test_cli_reports_a_bad_room_type_in_one_line(tmp_path: Path):
    cfg = tmp_path / "server.toml"
    cfg.write_text('[game]\nstart_room = "town"\n[[rooms]]\nname = "town"\n'
                   '[[rooms]]\nname = "arcade"\ntype = "nowhere.rooms:Arcade"\n')
    proc = subprocess.run([sys.executable, "-m", "gameserver.cli", "serve", "--config", str(cfg),
                           "--port", "0", "--data", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "room arcade: cannot import type 'nowhere.rooms:Arcade'" in lines[0]
