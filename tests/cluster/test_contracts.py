"""One contract per cluster seam, run over every implementation (Local, Redis)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

from gameserver.cluster.interfaces import Backend, NodeInfo, SessionEntry

MakeBackend = Callable[[], Backend]


# -- RoomLeases -------------------------------------------------------------------------------------------
async def test_lease_free_room_goes_to_first_node_and_others_see_owner(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    assert await a.leases.owner("forest") is None
    assert await a.leases.acquire("forest", "A", 5.0) == "A"
    assert await b.leases.acquire("forest", "B", 5.0) == "A"
    assert await b.leases.owner("forest") == "A"
    assert await a.leases.acquire("forest", "A", 5.0) == "A"   # re-acquire by the holder renews


async def test_lease_renew_keeps_own_and_reports_lost(make_backend: MakeBackend) -> None:
    a = make_backend()
    await a.leases.acquire("r1", "A", 5.0)
    await a.leases.acquire("r2", "B", 5.0)
    assert await a.leases.renew(["r1", "r2", "r3"], "A", 5.0) == {"r2", "r3"}
    assert await a.leases.renew([], "A", 5.0) == set()


async def test_lease_expires_without_renewal_then_another_node_takes_it(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    assert await a.leases.acquire("dungeon", "A", 0.15) == "A"
    await asyncio.sleep(0.1)
    assert await a.leases.renew(["dungeon"], "A", 0.15) == set()
    await asyncio.sleep(0.1)
    assert await b.leases.acquire("dungeon", "B", 5.0) == "A"   # renewed: still A's
    await asyncio.sleep(0.2)
    assert await a.leases.owner("dungeon") is None
    assert await b.leases.acquire("dungeon", "B", 5.0) == "B"
    assert await a.leases.renew(["dungeon"], "A", 5.0) == {"dungeon"}


async def test_lease_release_only_by_holder(make_backend: MakeBackend) -> None:
    a = make_backend()
    await a.leases.acquire("town", "A", 5.0)
    assert await a.leases.release("town", "B") is False
    assert await a.leases.owner("town") == "A"
    assert await a.leases.release("town", "A") is True
    assert await a.leases.owner("town") is None


# -- Presence -------------------------------------------------------------------------------------------
async def test_presence_announce_get_list_withdraw(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    now = time.time()
    await a.presence.announce(NodeInfo("A", "ws://a/ws", now))
    await b.presence.announce(NodeInfo("B", "ws://b/ws", now - 100))
    got = await b.presence.get("A")
    assert got is not None and got.url == "ws://a/ws" and abs(got.seen - now) < 1e-3
    assert got.alive(now, 5.0)
    old = await a.presence.get("B")
    assert old is not None and not old.alive(now, 5.0)
    assert {n.node for n in await a.presence.nodes()} == {"A", "B"}
    await a.presence.withdraw("A")
    assert await b.presence.get("A") is None


# -- SessionDirectory -----------------------------------------------------------------------------------
async def test_directory_claim_returns_previous_entry(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    assert await a.directory.claim("alice", SessionEntry("s1", "A")) is None
    prev = await b.directory.claim("alice", SessionEntry("s2", "B", "forest", 12.5))
    assert prev == SessionEntry("s1", "A")
    assert await a.directory.get("alice") == SessionEntry("s2", "B", "forest", 12.5)
    assert await a.directory.get("nobody") is None


async def test_directory_update_and_release_compare_session(make_backend: MakeBackend) -> None:
    a = make_backend()
    await a.directory.claim("bob", SessionEntry("s1", "A"))
    assert await a.directory.update("bob", SessionEntry("other", "B")) is False
    assert await a.directory.update("bob", SessionEntry("s1", "", "dungeon", 99.0)) is True
    assert await a.directory.get("bob") == SessionEntry("s1", "", "dungeon", 99.0)
    assert await a.directory.update("carol", SessionEntry("s1", "B")) is False   # absent stays absent
    assert await a.directory.get("carol") is None
    assert await a.directory.release("bob", "other") is False
    assert await a.directory.release("bob", "s1") is True
    assert await a.directory.get("bob") is None


async def test_directory_entry_with_ttl_expires(make_backend: MakeBackend) -> None:
    a = make_backend()
    await a.directory.claim("dave", SessionEntry("s1", "A"))
    assert await a.directory.update("dave", SessionEntry("s1", ""), ttl=0.1)
    await asyncio.sleep(0.25)
    assert await a.directory.get("dave") is None
    await a.directory.claim("erin", SessionEntry("s9", "A"), ttl=10.0)
    await a.directory.update("erin", SessionEntry("s9", "A"))   # no ttl: kept
    await asyncio.sleep(0.05)
    assert await a.directory.get("erin") == SessionEntry("s9", "A")


# -- PubSub ---------------------------------------------------------------------------------------------
async def test_directory_replay_buffer_is_taken_once_replaced_and_expires(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    assert await b.directory.take_replay("s1") is None
    await a.directory.put_replay("s1", "first", 5.0)
    await a.directory.put_replay("s1", "second", 5.0)          # a later hand-off replaces it
    await a.directory.put_replay("s2", "other", 5.0)
    assert await b.directory.take_replay("s1") == "second"
    assert await a.directory.take_replay("s1") is None          # one node adopts
    await a.directory.put_replay("s3", "short", 0.1)
    await asyncio.sleep(0.2)
    assert await b.directory.take_replay("s3") is None          # kept only as long as resumable
    assert await b.directory.take_replay("s2") == "other"


async def test_pubsub_delivers_to_the_named_node_only(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    got: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    done = asyncio.Event()

    def handler(node: str) -> Any:
        async def on(msg: dict[str, Any]) -> None:
            got[node].append(msg)
            if node == "B" and len(got["B"]) == 2:
                done.set()
        return on

    await a.pubsub.subscribe("A", handler("A"))
    await b.pubsub.subscribe("B", handler("B"))
    await a.pubsub.publish("nobody", {"op": "lost"})
    await a.pubsub.publish("B", {"op": "replace", "session": "s1"})
    await a.pubsub.publish("B", {"op": "xp", "n": [1, 2]})
    await asyncio.wait_for(done.wait(), 5.0)
    assert got["B"] == [{"op": "replace", "session": "s1"}, {"op": "xp", "n": [1, 2]}]
    assert got["A"] == []


# -- Ranking --------------------------------------------------------------------------------------------
async def test_ranking_highest_xp_first_ties_by_name_never_lowered(make_backend: MakeBackend) -> None:
    a, b = make_backend(), make_backend()
    if a.ranking is None or b.ranking is None:
        raise AssertionError("a shared backend must carry a ranking")
    await a.ranking.record_many([("zed", 50, 1), ("amy", 50, 1), ("bob", 400, 3)])
    await b.ranking.record("carl", 0, 1)
    await b.ranking.record("bob", 100, 2)        # late, lower write from another node: ignored
    await b.ranking.record("amy", 120, 2)
    assert await b.ranking.top(10) == [
        {"name": "bob", "level": 3, "xp": 400}, {"name": "amy", "level": 2, "xp": 120},
        {"name": "zed", "level": 1, "xp": 50}, {"name": "carl", "level": 1, "xp": 0}]
    assert [e["name"] for e in await a.ranking.top(2)] == ["bob", "amy"]


async def test_seats_join_or_create_exact_release_expiry_and_dispose(make_backend) -> None:
    seats = make_backend().seats
    kind = "arena"
    got = await asyncio.gather(*(seats.take(kind, f"s{i}", 8, 60.0) for i in range(100)))
    per = collections.Counter(got)
    assert sorted(per) == list(range(1, 14)) and max(per.values()) == 8 and per[13] == 4
    assert await seats.take(kind, "s0", 8, 60.0) == got[0]                 # a retry keeps the seat
    assert await seats.instances(kind) == [(n, 4 if n == 13 else 8) for n in range(1, 14)]
    assert await seats.take_exact(kind, 13, "x", 8, 60.0) == "ok"
    assert await seats.take_exact(kind, 2, "y", 8, 60.0) == "full"
    assert await seats.take_exact(kind, 14, "y", 8, 60.0) == "none"
    await seats.release(kind, 2, "s1" if got[1] == 2 else next(f"s{i}" for i, n in enumerate(got) if n == 2))
    assert await seats.take(kind, "z", 8, 60.0) == 2                       # the fullest with a free seat
    assert await seats.dispose(kind, 13) is False                          # seats held there
    for i, n in enumerate(got):
        if n == 13:
            await seats.release(kind, 13, f"s{i}")
    await seats.release(kind, 13, "x")
    assert await seats.dispose(kind, 13) is True and await seats.dispose(kind, 1) is False
    assert [n for n, _ in await seats.instances(kind)] == list(range(1, 13))
    short = await seats.take("duel", "a", 1, 0.2)
    await seats.refresh("duel", short, ["a"], 0.2)
    await asyncio.sleep(0.35)                                              # not refreshed again: expired
    assert await seats.instances("duel") == [(1, 0)]
    assert await seats.take("duel", "b", 1, 60.0) == 1
