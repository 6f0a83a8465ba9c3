"""One task per room: deadline-based tick, ordered inputs, encode once, never await a socket.

Each tick: apply every queued input in arrival order (join, leave, move, attack, chat, snapshot), then
``Room.step`` and send each ``Delivery`` encoded once per encoding to all its sessions with the synchronous
broadcast path; a backed-up session's link coalesces the tick instead. Deadlines advance by a fixed period
(``deadline += period``), so ticks do not drift; a tick that starts after the next deadline counts as an
overrun, and a runner more than ``MAX_BEHIND`` periods late skips ahead rather than bursting.

The input queue is bounded (``limits.room_input_queue``): a full queue rejects the input with
``error internal`` ("room busy"), counted in ``queue_drops{kind="room_input"}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.codec import encode_raw

from .game.room import GameError, Room
from .logs import event
from .session import Link, RoomBusy, Session
from .wsframe import server_frame

if TYPE_CHECKING:
    from .app import GameServer

log = logging.getLogger("gameserver.roomrunner")

MAX_BEHIND = 5


class RoomRunner:
    def __init__(self, room: Room, server: GameServer, tick_rate: float, max_inputs: int,
                 spawn: tuple[float, float]) -> None:
        self.room = room
        self.name = room.name
        self.server = server
        self.period = 1.0 / tick_rate
        self.max_inputs = max_inputs
        self.spawn = spawn
        # Room-wide reliable messages (chat) raised while a tick applies its inputs: sent with that tick's
        # frame in ONE socket write per receiver instead of one write per message per receiver.
        self._in_tick = False
        self._room_msgs: list[dict[str, Any]] = []
        # (kind, session, arg, rid, arrival time): moves and attacks are judged at their arrival time, so
        # two moves inside one tick each get their own share of the speed budget.
        self.inputs: deque[tuple[str, Session, Any, int | None, float]] = deque()
        self._clock: Callable[[], float] = time.monotonic   # the loop's clock once started
        self.by_pid: dict[int, Session] = {}
        self.n = 0
        self.overruns = 0
        self.lag = 0.0
        self.lags: deque[float] = deque(maxlen=max(1, int(tick_rate)))   # ~1 s window for /health
        self.work: deque[float] = deque(maxlen=10_000)
        self._task: asyncio.Task[None] | None = None
        m = server.metrics
        self._m_duration = m.tick_duration.labels(self.name)
        self._m_lag = m.tick_lag.labels(self.name)
        self._m_overrun = m.tick_overruns.labels(self.name)
        self._m_tick_out = m.msg_out("tick")

    # -- inputs ------------------------------------------------------------------------------------
    def submit(self, kind: str, session: Session, arg: Any = None, rid: int | None = None) -> None:
        """Queue an input for the next tick; raises RoomBusy when the bounded queue is full."""
        if len(self.inputs) >= self.max_inputs:
            self.server.metrics.queue_drops.labels("room_input").inc()
            raise RoomBusy(f"room {self.name} is busy, try again")
        self.inputs.append((kind, session, arg, rid, self._clock()))

    def detach(self, session: Session) -> None:
        """Take the session's player out of this room now (leave, room change, session end)."""
        if session.runner is not self or session.pid is None:
            return
        x, y = self.room.position(session.pid)
        ch = session.character
        ch.x, ch.y = x, y
        ch.dirty = True
        self.room.remove_player(session.pid)
        self.by_pid.pop(session.pid, None)
        session.runner = None
        session.pid = None

    def broadcast_reliable(self, body: dict[str, Any]) -> None:
        """Send one reliable message to everyone in the room, encoded once per encoding.

        During a tick it goes out with the tick's frames (same socket write); outside a tick (a
        ``level_up`` after a grant is acknowledged) it goes out now.
        """
        self._room_msgs.append(body)
        if not self._in_tick:
            self._send([])

    # -- tick loop ---------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._task = loop.create_task(self._run(), name=f"room:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.period
        deadline = loop.time() + period
        while True:
            delay = deadline - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            start = loop.time()
            self.lag = lag = max(0.0, start - deadline)
            self.lags.append(lag)
            try:
                self.tick(start)
            except Exception:
                event(log, "tick_failed", level=logging.ERROR, room=self.name, exc_info=True)
            end = loop.time()
            work = end - start
            self.work.append(work)
            self._m_duration.observe(work)
            self._m_lag.set(lag)
            deadline += period
            if end > deadline:
                self.overruns += 1
                self._m_overrun.inc()
                if end - deadline > MAX_BEHIND * period:
                    deadline = end + period

    def tick(self, now: float) -> None:
        """One tick: inputs in order, step, deliveries. Public so tests can drive it with a fake clock."""
        inputs = self.inputs
        self._in_tick = True
        try:
            while inputs:
                kind, session, arg, rid, arrived = inputs.popleft()
                if not session.ended:
                    try:
                        getattr(self, "_apply_" + kind)(session, arg, rid, min(arrived, now))
                    except Exception as exc:
                        self.server.router.reply_error(session.link, exc, rid)
                if kind == "join":
                    session.placed(self)
        finally:
            self._in_tick = False
        self.n += 1
        deliveries = self.room.step(now)
        if deliveries or self._room_msgs:
            self._send(deliveries)

    def _send(self, deliveries: list[Any]) -> None:
        """Write this tick's deliveries and room messages: at most one socket write per receiver.

        A tick body is encoded and framed once per delivery group and encoding; the room messages once per
        encoding. A receiver whose socket is backed up gets them through its out queue instead (room
        messages reliably, the tick coalesced).
        """
        n, ts = self.n, time.time()
        by_pid = self.by_pid
        room = _RoomMessages(self._room_msgs)
        self._room_msgs = []
        owed: set[int] = set(by_pid) if room else set()   # receivers not yet given the room messages
        sent = sent_bytes = 0
        for d in deliveries:
            wires: dict[bool, bytes] = {}
            for pid in d.pids:
                session = by_pid.get(pid)
                link: Link | None = session.link if session is not None else None
                if link is None:
                    continue
                binary = link.binary is not False
                with_room = pid in owed
                if with_room:
                    owed.discard(pid)
                if not link.direct_ok:
                    if with_room:
                        room.queue(link, binary)
                    link.queue_tick(d.body, n, ts)
                    continue
                wire = wires.get(binary)
                if wire is None:
                    wire = wires[binary] = server_frame(encode_raw({"t": "tick", "n": n, "ts": ts, **d.body},
                                                                   binary))
                sent += 1
                sent_bytes += len(wire)
                if with_room:
                    link.sink.send_wire(room.wire(binary) + wire)
                    room.count(binary)
                else:
                    link.sink.send_wire(wire)
        for pid in owed:   # room messages for receivers that got no tick this time
            link = by_pid[pid].link
            if link is None:
                continue
            binary = link.binary is not False
            if link.direct_ok:
                link.sink.send_wire(room.wire(binary))
                room.count(binary)
            else:
                room.queue(link, binary)
        metrics = self.server.metrics
        if sent:
            self._m_tick_out.inc(sent)
        room.record(metrics)
        if sent_bytes:
            metrics.bytes_out.inc(sent_bytes)

    # -- input handlers (called in order at tick start) ----------------------------------------------
    def _joined_body(self, session: Session, rid: int | None) -> dict[str, Any]:
        assert session.pid is not None
        body = {"t": "joined", "room": self.name, "you": session.pid, **self.room.view_for(session.pid)}
        if rid is not None:
            body["rid"] = rid
        return body

    def _apply_join(self, session: Session, arg: Any, rid: int | None, now: float) -> None:
        """``arg``: (x, y) to place the player (login/resume) or None for the room's spawn point."""
        if session.runner is not self:
            if session.runner is not None:
                session.runner.detach(session)
            x, y = arg if arg is not None else self.spawn
            pid = self.room.add_player(session.name, x, y, now)
            session.runner, session.pid = self, pid
            self.by_pid[pid] = session
            ch = session.character
            ch.room = self.name
            ch.x, ch.y = self.room.position(pid)
            ch.dirty = True
        if session.link is not None:
            session.link.out.reset_tick()
            session.link.send(self._joined_body(session, rid))

    def _apply_snapshot(self, session: Session, arg: Any, rid: int | None, now: float) -> None:
        """After a resume: a fresh ``joined`` (no rid) of the room the player is still in."""
        if session.runner is self and session.link is not None:
            session.link.out.reset_tick()
            session.link.send(self._joined_body(session, None))

    def _apply_leave(self, session: Session, arg: Any, rid: int | None, now: float) -> None:
        if session.runner is not self:
            raise GameError("not_in_room", "not in a room")
        self.detach(session)
        self.server.save_soon(session.character)
        if session.link is not None:
            session.link.out.reset_tick()
            body: dict[str, Any] = {"t": "left", "room": self.name}
            if rid is not None:
                body["rid"] = rid
            session.link.send(body)

    def _apply_move(self, session: Session, arg: Any, rid: int | None, now: float) -> None:
        if session.runner is not self or session.pid is None:
            raise GameError("not_in_room", "not in a room")
        x, y = self.room.move(session.pid, arg[0], arg[1], now)
        ch = session.character
        ch.x, ch.y = x, y
        ch.dirty = True

    def _apply_attack(self, session: Session, arg: Any, rid: int | None, now: float) -> None:
        if session.runner is not self or session.pid is None:
            raise GameError("not_in_room", "not in a room")
        outcome = self.room.attack(session.pid, arg, now)
        body: dict[str, Any] = {"t": "hit", "mob": outcome.mob, "dmg": outcome.dmg, "hp": outcome.hp}
        if rid is not None:
            body["rid"] = rid
        session.send(body)
        if outcome.killed:
            ch = session.character
            ch.kills += 1
            ch.dirty = True
            self.server.grants.start(outcome.hitters, outcome.xp, f"kill:{outcome.mob}", self)

    def _apply_chat(self, session: Session, arg: Any, rid: int | None, now: float) -> None:
        if session.runner is not self:
            raise GameError("not_in_room", "not in a room")
        self.broadcast_reliable({"t": "chat", "from": session.name, "text": arg, "ts": time.time()})

    # -- stats -------------------------------------------------------------------------------------
    def lag_max(self) -> float:
        return max(self.lags, default=0.0)


class _RoomMessages:
    """Room-wide reliable messages of one tick, encoded and framed lazily, once per encoding."""

    __slots__ = ("_frames", "_sent", "_wires", "bodies")

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.bodies = bodies
        self._frames: dict[bool, list[bytes | str]] = {}
        self._wires: dict[bool, bytes] = {}
        self._sent: dict[bool, int] = {True: 0, False: 0}

    def __bool__(self) -> bool:
        return bool(self.bodies)

    def frames(self, binary: bool) -> list[bytes | str]:
        found = self._frames.get(binary)
        if found is None:
            found = self._frames[binary] = [encode_raw(body, binary) for body in self.bodies]
        return found

    def wire(self, binary: bool) -> bytes:
        """All messages as consecutive websocket frames, ready for one socket write."""
        found = self._wires.get(binary)
        if found is None:
            found = self._wires[binary] = b"".join(server_frame(f) for f in self.frames(binary))
        return found

    def count(self, binary: bool) -> None:
        """One receiver was written ``wire(binary)`` directly."""
        self._sent[binary] += 1

    def queue(self, link: Link, binary: bool) -> None:
        """A backed-up receiver: through its reliable queue (never dropped; overflow disconnects)."""
        for body, frame in zip(self.bodies, self.frames(binary), strict=True):
            link.send_frame(frame, body["t"])

    def record(self, metrics: Any) -> None:
        """Count the directly written messages (queued ones are counted by ``Link.send_frame``)."""
        receivers = self._sent[True] + self._sent[False]
        if not receivers:
            return
        for body in self.bodies:
            metrics.msg_out(body["t"]).inc(receivers)
        metrics.bytes_out.inc(sum(len(self._wires[b]) * n for b, n in self._sent.items() if n))
