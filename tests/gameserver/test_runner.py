"""The room runner on its own: a room instance, an outbox, an events recorder, recording links and a fake
clock. No server, no sockets, no store."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gameserver.characters import Character
from gameserver.config import LimitsConfig
from gameserver.errors import RoomBusy
from gameserver.metrics import Metrics
from gameserver.outbox import Outbox
from gameserver.rooms import Player, Room, on_message
from gameserver.rooms.runner import RoomRunner
from gameserver.session import Link, Session
from tests.gameserver.test_roomrunner_writes import RecordingSink, frames_of


class Step(BaseModel):
    n: int


class Probe(Room):
    def on_create(self) -> None:
        self.seen: list[tuple[str, Any, float]] = []

    def on_join(self, player: Player) -> dict[str, Any]:
        self.seen.append(("join", player.name, self.now))
        return {"n": len(self.players)}

    def on_tick(self, now: float) -> None:
        self.seen.append(("tick", self.tick, now))
        if self.players:
            everyone = list(self.players.values())
            self.send_tick(everyone, {"count": [[p.id, self.tick] for p in everyone]})

    @on_message("step", Step)
    def step(self, player: Player, msg: Step) -> dict[str, Any]:
        if msg.n < 0:
            raise ValueError("negative step")
        self.seen.append(("step", (player.name, msg.n), self.now))
        self.broadcast({"t": "stepped", "by": player.name, "n": msg.n})
        return {"t": "ok", "n": msg.n}


class Events:
    def __init__(self) -> None:
        self.grants: list[tuple[str, int, str]] = []
        self.left: list[str] = []

    def grant_xp(self, name: str, amount: int, reason: str, runner: RoomRunner) -> None:
        self.grants.append((name, amount, reason))

    def player_left(self, session: Session) -> None:
        self.left.append(session.name)


def make(max_inputs: int = 100) -> tuple[RoomRunner, Probe, Metrics]:
    metrics = Metrics()
    room = Probe()
    room.name = "probe"
    room.on_create()
    runner = RoomRunner(room, Outbox(metrics), Events(), metrics, tick_rate=10, max_inputs=max_inputs)
    return runner, room, metrics


def session(name: str, metrics: Metrics) -> tuple[Session, RecordingSink]:
    sink = RecordingSink()
    link = Link(sink, LimitsConfig(), metrics, 0.0)
    link.binary = True
    s = Session(f"id-{name}", Character(name=name, secret="x"))
    s.link, link.session = link, s
    return s, sink


def test_inputs_apply_in_arrival_order_with_their_arrival_time_then_on_tick():
    runner, room, metrics = make()
    clock = iter([1.0, 1.01, 1.02, 1.03])
    runner._clock = lambda: next(clock)
    a, _ = session("ann", metrics)
    b, _ = session("ben", metrics)
    runner.submit("join", a)
    runner.submit("join", b)
    runner.submit("message", a, ("step", Step(n=1)), 7)
    runner.submit("message", b, ("step", Step(n=2)))
    runner.tick(1.05)
    assert room.seen == [("join", "ann", 1.0), ("join", "ben", 1.01), ("step", ("ann", 1), 1.02),
                         ("step", ("ben", 2), 1.03), ("tick", 1, 1.05)]
    runner.tick(1.15)
    assert room.seen[-1] == ("tick", 2, 1.15)                       # every tick, nothing changed or not


def test_one_write_per_receiver_reply_broadcast_and_tick_in_order():
    runner, _room, metrics = make()
    a, sink_a = session("ann", metrics)
    b, sink_b = session("ben", metrics)
    runner.submit("join", a)
    runner.submit("join", b)
    runner.tick(1.0)
    sink_a.writes.clear()
    sink_b.writes.clear()
    runner.submit("message", a, ("step", Step(n=3)), 42)
    runner.tick(1.1)
    assert len(sink_a.writes) == 1 and len(sink_b.writes) == 1
    got_a = frames_of(sink_a.writes[0])
    assert [m["t"] for m in got_a] == ["stepped", "ok", "tick"]
    assert got_a[1] == {"t": "ok", "n": 3, "rid": 42, "seq": 2}   # after the broadcast
    assert got_a[2]["n"] == 2 and sorted(got_a[2]["count"]) == [[1, 2], [2, 2]]
    got_b = frames_of(sink_b.writes[0])
    assert [m["t"] for m in got_b] == ["stepped", "tick"]
    stepped = [w for w in sink_a.writes[0].split(b"stepped")]   # the broadcast was encoded once
    assert len(stepped) == 2


def test_a_raising_handler_answers_internal_and_the_tick_goes_on():
    runner, _room, metrics = make()
    a, sink_a = session("ann", metrics)
    runner.submit("join", a)
    runner.submit("message", a, ("step", Step(n=-1)), 9)
    runner.submit("message", a, ("step", Step(n=4)), 10)
    runner.tick(1.0)
    msgs = frames_of(b"".join(sink_a.writes))
    errors = [m for m in msgs if m["t"] == "error"]
    assert errors == [{"t": "error", "code": "internal", "message": "internal server error", "rid": 9,
                       "seq": 1}]
    assert {"t": "ok", "n": 4, "rid": 10, "seq": 3} in msgs and msgs[-1]["t"] == "tick"   # 2: its "stepped"
    assert metrics.room_errors.labels("probe", "step")._value.get() == 1


def test_messages_for_a_player_not_in_the_room_are_refused_and_the_queue_is_bounded():
    runner, _room, metrics = make(max_inputs=2)
    a, sink_a = session("ann", metrics)
    runner.submit("message", a, ("step", Step(n=1)), 1)
    runner.submit("leave", a, None, 2)
    try:
        runner.submit("chat", a, "over the bound")
        raise AssertionError("a full input queue must refuse")
    except RoomBusy:
        pass
    runner.tick(1.0)
    assert len(sink_a.writes) == 1                                  # both answers in one write
    errors = [(m["code"], m["rid"]) for m in frames_of(sink_a.writes[0]) if m["t"] == "error"]
    assert errors == [("not_in_room", 1), ("not_in_room", 2)]
