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
from .session import Link, RoomBusy, Session, Sink

if TYPE_CHECKING:
    from .app import GameServer

log = logging.getLogger("gameserver.roomrunner")

MAX_BEHIND = 5
Broadcast = Callable[[list[Sink], bytes | str], None]


class RoomRunner:
    def __init__(self, room: Room, server: GameServer, tick_rate: float, max_inputs: int,
                 broadcast: Broadcast, spawn: tuple[float, float]) -> None:
        self.room = room
        self.name = room.name
        self.server = server
        self.period = 1.0 / tick_rate
        self.max_inputs = max_inputs
        self.broadcast = broadcast
        self.spawn = spawn
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
        """Send one reliable message to everyone in the room: encoded once per encoding."""
        frames: dict[bool, bytes | str] = {}
        t = body["t"]
        for session in self.by_pid.values():
            link = session.link
            if link is None:
                continue
            binary = link.binary is not False
            frame = frames.get(binary)
            if frame is None:
                frame = frames[binary] = encode_raw(body, binary)
            link.send_frame(frame, t)

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
        while inputs:
            kind, session, arg, rid, arrived = inputs.popleft()
            if not session.ended:
                try:
                    getattr(self, "_apply_" + kind)(session, arg, rid, min(arrived, now))
                except Exception as exc:
                    self.server.router.reply_error(session.link, exc, rid)
            if kind == "join":
                session.placed(self)
        self.n += 1
        deliveries = self.room.step(now)
        if deliveries:
            self._send_ticks(deliveries)

    def _send_ticks(self, deliveries: list[Any]) -> None:
        n, ts = self.n, time.time()
        by_pid = self.by_pid
        broadcast = self.broadcast
        sent = sent_bytes = 0
        for d in deliveries:
            binary: list[Sink] = []
            text: list[Sink] = []
            for pid in d.pids:
                session = by_pid.get(pid)
                link: Link | None = session.link if session is not None else None
                if link is None:
                    continue
                if link.direct_ok:
                    (text if link.binary is False else binary).append(link.sink)
                else:
                    link.queue_tick(d.body, n, ts)
            if binary or text:
                body = {"t": "tick", "n": n, "ts": ts, **d.body}
                for sinks, is_binary in ((binary, True), (text, False)):
                    if sinks:
                        frame = encode_raw(body, is_binary)
                        broadcast(sinks, frame)
                        sent += len(sinks)
                        sent_bytes += len(frame) * len(sinks)
        if sent:
            self._m_tick_out.inc(sent)
            self.server.metrics.bytes_out.inc(sent_bytes)

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
