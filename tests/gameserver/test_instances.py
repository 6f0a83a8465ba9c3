"""Room instances on one node: join-or-create with atomic seats, exact instance joins, the `rooms` listing,
disposal of idle instances, and seats held through a dropped socket."""

from __future__ import annotations

import asyncio
import collections
import uuid

import pytest

from shared.client import GameClient, ServerError
from tests.gameserver.conftest import SECRET, url

# Logging in 100 clients can take seconds on a loaded machine: the early ones must not be idle-kicked.
ROOMS = [{"name": "town"}, {"name": "arena", "width": 200.0, "height": 200.0, "max_players": 8,
                            "idle_dispose": 0.6}]


async def connected(server, n: int, prefix: str) -> list[GameClient]:
    tag = uuid.uuid4().hex[:4]

    async def one(i: int) -> GameClient:
        c = await GameClient.connect(url(server), timeout=10.0)
        await c.login(f"{prefix}{i}_{tag}", SECRET)
        return c

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def close_all(clients: list[GameClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def until(predicate, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_100_simultaneous_joins_fill_13_instances_never_above_8(start_server):
    server = await start_server(rooms=ROOMS, limits={"idle_timeout": 30.0})
    clients = await connected(server, 100, "p")
    try:
        joined = await asyncio.gather(*(c.join("arena") for c in clients))
        per_instance = collections.Counter(j.room for j in joined)
        assert len(per_instance) == 13 and max(per_instance.values()) == 8
        assert sorted(per_instance.values()) == [4] + [8] * 12
        assert set(per_instance) == {"arena", *(f"arena~{n}" for n in range(2, 14))}
        await asyncio.sleep(0.1)
        members = {name: len(r.members) for name, r in server.runners.items() if r.kind == "arena"}
        assert members == dict(per_instance)                     # every client in exactly one instance
        assert sum(members.values()) == 100
        listing = await clients[0].rooms("arena")
        assert [(e.room, e.players, e.max_players) for e in listing.entries][:2] == [
            ("arena", 8, 8), ("arena~2", 8, 8)]
        assert server.metrics.room_instances.labels("arena")._value.get() == 13
        assert server.health()["instances"]["arena"] == 13
    finally:
        await close_all(clients)


async def test_exact_instance_joins_and_their_errors(start_server):
    duel = {"name": "duel", "width": 100.0, "height": 100.0, "max_players": 2}
    server = await start_server(rooms=[*ROOMS, duel], limits={"idle_timeout": 30.0})
    clients = await connected(server, 5, "q")
    try:
        assert [(await c.join("duel")).room for c in clients[:4]] == ["duel", "duel", "duel~2", "duel~2"]
        with pytest.raises(ServerError) as err:
            await clients[4].join("duel~2")
        assert err.value.code == "room_full" and "2 players" in err.value.message
        for room in ("duel~3", "duel~1", "duel~02", "duel~x", "town~2", "nowhere"):
            with pytest.raises(ServerError) as err:
                await clients[4].join(room)
            assert err.value.code == "no_such_room", room
        assert (await clients[4].join("duel")).room == "duel~3"    # join-or-create never fails
        await clients[3].leave()
        assert (await clients[4].join("duel~2")).room == "duel~2"   # a seat came free
        assert server.runners["town"].name == "town"
        assert len(server.runners["duel~2"].members) == 2
        rooms = await clients[0].rooms("duel")
        assert [(e.room, e.players) for e in rooms.entries] == [
            ("duel", 2), ("duel~2", 2), ("duel~3", 0)]
        town = await clients[0].rooms("town")
        assert [(e.room, e.max_players) for e in town.entries] == [("town", None)]
        with pytest.raises(ServerError) as err:
            await clients[0].rooms("nowhere")
        assert err.value.code == "no_such_room"
    finally:
        await close_all(clients)


async def test_an_emptied_instance_is_disposed_and_only_then_its_id_reused(start_server):
    server = await start_server(rooms=ROOMS, limits={"idle_timeout": 30.0}, auth={"grace_seconds": 5.0})
    clients = await connected(server, 10, "r")
    try:
        for c in clients[:8]:
            await c.join("arena")
        lone = clients[8]
        assert (await lone.join("arena")).room == "arena~2"
        first_runner = server.runners["arena~2"]
        await lone.leave()
        listing = await lone.rooms("arena")
        assert ("arena~2", 0) in [(e.room, e.players) for e in listing.entries]   # still there
        assert (await clients[9].join("arena~2")).room == "arena~2"                     # and joinable
        await clients[9].leave()
        await until(lambda: "arena~2" not in server.runners, 5.0)                       # disposed
        assert server.metrics.room_instances.labels("arena")._value.get() == 1
        with pytest.raises(ServerError) as err:
            await lone.join("arena~2")
        assert err.value.code == "no_such_room"
        again = await lone.join("arena")                           # arena is full: a new instance ...
        assert again.room == "arena~2" and server.runners["arena~2"] is not first_runner   # ... same id, anew
    finally:
        await close_all(clients)


async def test_a_dropped_player_keeps_its_seat_and_instance_through_the_grace_period(start_server):
    server = await start_server(rooms=ROOMS, limits={"idle_timeout": 30.0}, auth={"grace_seconds": 3.0})
    clients = await connected(server, 9, "s")
    resumed: GameClient | None = None
    try:
        for c in clients[:8]:
            await c.join("arena")
        lone = clients[8]
        assert (await lone.join("arena")).room == "arena~2"
        token = lone.token
        lone._conn.ws.transport.abort()                            # the server sees a drop, not a close
        await asyncio.sleep(1.2)                                   # > idle_dispose, < grace
        assert "arena~2" in server.runners                         # kept: a seat is held
        resumed = await GameClient.connect(url(server), timeout=5.0)
        welcome = await resumed.resume(token)
        assert welcome.character.room == "arena~2" and resumed.world.room == "arena~2"
    finally:
        await close_all(clients)
        if resumed is not None:
            await resumed.close()
