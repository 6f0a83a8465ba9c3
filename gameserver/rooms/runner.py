"""One task per room instance: deadline-based tick, inputs in arrival order, hooks that cannot take it down.

Each tick: apply every queued input in arrival order (``join``, ``leave``, ``snapshot``, ``chat`` and the
room type's own messages), call ``on_tick``, then flush the room's ``Outbox`` (one socket write per
receiver). Deadlines advance by a fixed period (``deadline += period``), so ticks do not drift; a tick that
starts after the next deadline counts as an overrun, and a runner more than ``MAX_BEHIND`` periods late
skips ahead rather than bursting.

The input queue is bounded (``limits.room_input_queue``): a full queue rejects the input with ``RoomBusy``
(``error internal`` "room busy"), counted in ``queue_drops{kind="room_input"}``.

What the runner gets: its ``Room`` instance, an ``Outbox``, a ``RoomEvents`` callback (XP grants, players
leaving) and the metrics; sessions come in with their inputs. It never sees sockets, the store or the
server, so it is tested with a fake clock (``tick(now)``) and recording links.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RoomBusy, is_expected, wire_error
from ..logs import event
from .api import Player, Room, RoomError, RoomServices

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..outbox import Outbox
    from ..session import Session

log = logging.getLogger("gameserver.rooms")

MAX_BEHIND = 5


class RoomEvents(Protocol):
    """What a runner tells the rest of the server."""

    def grant_xp(self, name: str, amount: int, reason: str, runner: RoomRunner) -> None:
        """Start a durable XP grant (the runner never awaits it)."""
        ...

    def player_left(self, session: Session) -> None:
        """``session``'s player left the room by ``leave``: save its character soon."""
        ...

    def seat_freed(self, session: Session, runner: RoomRunner) -> None:
        """``session`` is out of ``runner``'s instance for good: its seat there is free again."""
        ...


class RoomRunner(RoomServices):
    """Drives one room instance; see the module docstring."""

    def __init__(self, room: Room, outbox: Outbox, events: RoomEvents, metrics: Metrics, *,
                 tick_rate: float, max_inputs: int, max_players: int | None = None,
                 kind: str = "") -> None:
        self.room = room
        self.name = room.name
        self.kind = kind or room.name          # the configured room name (instances share it)
        self.outbox = outbox
        self.events = events
        self.metrics = metrics
        self.tick_rate = float(tick_rate)
        self.period = 1.0 / tick_rate
        self.max_inputs = max_inputs
        self.max_players = max_players
        # (kind, session, arg, rid, arrival time): handlers see their input's arrival time as ``room.now``.
        self.inputs: deque[tuple[str, Session, Any, int | None, float]] = deque()
        self._clock: Callable[[], float] = time.monotonic   # the loop's clock once started
        self.members: dict[int, Player] = {}
        self._next_pid = 1
        self.n = 0
        self.overruns = 0
        self.lag = 0.0
        self.lags: deque[float] = deque(maxlen=max(1, int(tick_rate)))   # ~1 s window for /health
        self.work: deque[float] = deque(maxlen=10_000)
        self._task: asyncio.Task[None] | None = None
        self._m_duration = metrics.tick_duration.labels(self.name)
        self._m_lag = metrics.tick_lag.labels(self.name)
        self._m_overrun = metrics.tick_overruns.labels(self.name)
        # t -> the room's bound handler, looked up once (every move of every player goes through it)
        self._handlers: dict[str, Callable[[Player, Any], Any]] = {
            t: getattr(room, method) for t, (_model, method) in room.messages.items()}
        room._services = self

    @property
    def running(self) -> bool:
        return self._task is not None

    def spawn_point(self) -> tuple[float, float]:
        """Where a new character whose first room this is starts."""
        return self.room.spawn_point()

    # -- inputs ------------------------------------------------------------------------------------
    def submit(self, kind: str, session: Session, arg: Any = None, rid: int | None = None) -> None:
        """Queue an input for the next tick; raises RoomBusy when the bounded queue is full.

        ``kind``: ``join`` (arg: True when the player returns to its character's saved place), ``leave``,
        ``snapshot`` (a fresh ``joined`` after a resume), ``chat`` (arg: text) or ``message`` (arg:
        ``(t, validated model)``).
        """
        if len(self.inputs) >= self.max_inputs:
            self.metrics.queue_drops.labels("room_input").inc()
            raise RoomBusy(f"room {self.name} is busy, try again")
        self.inputs.append((kind, session, arg, rid, self._clock()))

    def player_of(self, session: Session) -> Player | None:
        pid = session.pid
        if session.runner is not self or pid is None:
            return None
        return self.members.get(pid)

    def detach(self, session: Session, keep_seat: bool = False) -> None:
        """Take the session's player out of this room now (leave, room change, session end; a hand-off to
        another node keeps the seat: the session comes back to this instance there)."""
        player = self.player_of(session)
        if not keep_seat:
            self.events.seat_freed(session, self)
        if player is None:
            return
        del self.members[player.id]
        self.room.players.pop(player.id, None)
        session.runner = None
        session.pid = None
        self._call(session, None, "on_leave", self.room.on_leave, player, reply=False)

    def seated(self) -> list[str]:
        """Session ids holding a seat here: the players in the room and the joins on their way."""
        return [p.session.id for p in self.members.values()] + [
            s.id for kind, s, *_ in self.inputs if kind == "join"]

    # -- services lent to the room -----------------------------------------------------------------
    def send(self, player: Player, body: dict[str, Any]) -> None:
        if self.members.get(player.id) is player:
            self.outbox.personal(player.session, body)

    def broadcast(self, body: dict[str, Any], exclude: Player | None = None) -> None:
        self.outbox.room(body, [p.session for p in self.members.values() if p is not exclude])

    def send_tick(self, receivers: Iterable[Player | int], body: dict[str, Any]) -> None:
        members = self.members
        sessions = []
        for r in receivers:
            p = members.get(r) if isinstance(r, int) else (r if members.get(r.id) is r else None)
            if p is not None:
                sessions.append(p.session)
        self.outbox.tick(sessions, body)

    def grant_xp(self, name: str, amount: int, reason: str) -> None:
        self.events.grant_xp(name, amount, reason, self)

    def announce(self, body: dict[str, Any]) -> None:
        """A room-wide message from outside the room's code (``level_up`` after a grant is stored)."""
        self.broadcast(body)

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

    def dispose(self) -> None:
        """The instance goes away for good: ``on_dispose`` (errors logged), services unbound."""
        self._call(None, None, "on_dispose", self.room.on_dispose, reply=False)
        self.room._services = None

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
        """One tick: inputs in order, ``on_tick``, flush. Public so tests drive it with a fake clock."""
        room = self.room
        inputs = self.inputs
        outbox = self.outbox
        self.n += 1
        room.tick = self.n
        outbox.buffering = True
        try:
            while inputs:
                kind, session, arg, rid, arrived = inputs.popleft()
                if not session.ended:
                    room.now = arrived if arrived < now else now
                    if kind == "message":
                        self._apply_message(session, arg, rid)
                    elif kind == "join":
                        self._apply_join(session, bool(arg), rid)
                    elif kind == "chat":
                        self._apply_chat(session, arg, rid)
                    elif kind == "leave":
                        self._apply_leave(session, rid)
                    elif kind == "snapshot":
                        self._apply_snapshot(session)
                    if kind == "join" or kind == "snapshot":
                        outbox.release(session)   # a resume's held messages follow its joined
                if kind == "join":
                    session.placed(self)
            room.now = now
            self._call(None, None, "on_tick", room.on_tick, now, reply=False)
        finally:
            outbox.buffering = False
            outbox.flush(self.n)

    # -- input handlers (called in order at tick start) ----------------------------------------------
    def _call(self, session: Session | None, rid: int | None, hook: str, fn: Callable[..., Any],
              *args: Any, reply: bool = True) -> Any:
        """Call room code; a raise never escapes. RoomError answers the sender with its code; anything
        else answers ``internal``, is logged with its traceback and counted."""
        try:
            return fn(*args)
        except Exception as exc:
            self._failed(session, rid, hook, exc, reply)
            return _FAILED

    def _failed(self, session: Session | None, rid: int | None, hook: str, exc: Exception,
                reply: bool = True) -> None:
        """Room code raised (or returned something unusable): what ``_call`` does with it."""
        if not isinstance(exc, RoomError):
            self.metrics.room_errors.labels(self.kind, hook).inc()
            event(log, "room_code_failed", level=logging.ERROR, room=self.name, hook=hook,
                  exc_info=(type(exc), exc, exc.__traceback__), error=repr(exc))
        if reply and session is not None:
            self.outbox.personal(session, wire_error(exc, rid))
            self.metrics.errors.labels(exc.code if isinstance(exc, RoomError) else "internal").inc()

    def _reply(self, session: Session, body: Any, rid: int | None) -> None:
        if body is None or body is _FAILED:
            return
        if not isinstance(body, dict) or not isinstance(body.get("t"), str):
            exc = TypeError(f"room {self.name}: a handler returned {body!r:.80}, not a dict with 't'")
            self._failed(session, rid, "reply", exc)
            return
        if rid is not None:
            body = {**body, "rid": rid}
        self.outbox.personal(session, body)

    def _apply_message(self, session: Session, arg: tuple[str, Any], rid: int | None) -> None:
        player = self.player_of(session)
        if player is None:
            self._refuse(session, RoomError("not_in_room", "not in a room"), rid)
            return
        t, msg = arg
        handler = self._handlers.get(t)
        if handler is None:   # the session moved to a room of another type since the message was routed
            self._refuse(session, RoomError("unknown_type", f"room {self.name} has no message {t!r}"), rid)
            return
        try:   # not through _call: this runs for every move of every player
            body = handler(player, msg)
        except Exception as exc:
            self._failed(session, rid, t, exc)
            return
        if body is not None:
            self._reply(session, body, rid)

    def _apply_join(self, session: Session, returning: bool, rid: int | None) -> None:
        player = self.player_of(session)
        if player is not None:   # already here: a fresh snapshot
            self._send_joined(session, player, self._call(session, rid, "on_reconnect",
                                                          self.room.on_reconnect, player), rid)
            return
        if session.runner is not None:
            session.runner.detach(session)
        pid = self._next_pid
        self._next_pid += 1
        ch = session.character
        player = Player(pid, ch, ch.data.setdefault(self.room.data_key(), {}), session, returning)
        self.members[pid] = player
        self.room.players[pid] = player
        session.runner, session.pid = self, pid
        ch.room = self.name
        ch.dirty = True
        self.outbox.reset(session)
        extra = self._call(session, rid, "on_join", self.room.on_join, player)
        if extra is _FAILED:   # the room refused or failed the join: the player is not in it
            del self.members[pid]
            self.room.players.pop(pid, None)
            session.runner = session.pid = None
            self.events.seat_freed(session, self)
            return
        self._send_joined(session, player, extra, rid)

    def _send_joined(self, session: Session, player: Player, extra: Any, rid: int | None) -> None:
        if extra is _FAILED:
            return
        body: dict[str, Any] = {"t": "joined", "room": self.name, "you": player.id}
        if isinstance(extra, dict):
            body.update((k, v) for k, v in extra.items() if k not in ("t", "rid", "room", "you"))
        elif extra is not None:
            exc = TypeError(f"room {self.name}: on_join returned {extra!r:.80}, not a dict")
            self._failed(None, None, "on_join", exc, reply=False)
        if rid is not None:
            body["rid"] = rid
        self.outbox.personal(session, body)

    def _apply_snapshot(self, session: Session) -> None:
        """After a resume: a fresh ``joined`` (no rid) of the room the player is still in."""
        player = self.player_of(session)
        if player is not None:
            self.outbox.reset(session)
            extra = self._call(session, None, "on_reconnect", self.room.on_reconnect, player)
            self._send_joined(session, player, extra, None)

    def _apply_leave(self, session: Session, rid: int | None) -> None:
        if self.player_of(session) is None:
            self._refuse(session, RoomError("not_in_room", "not in a room"), rid)
            return
        self.detach(session)
        self.events.player_left(session)
        self.outbox.reset(session)
        body: dict[str, Any] = {"t": "left", "room": self.name}
        if rid is not None:
            body["rid"] = rid
        self.outbox.personal(session, body)

    def _apply_chat(self, session: Session, text: str, rid: int | None) -> None:
        if self.player_of(session) is None:
            self._refuse(session, RoomError("not_in_room", "not in a room"), rid)
            return
        self.broadcast({"t": "chat", "from": session.name, "text": text, "ts": time.time()})

    def _refuse(self, session: Session, exc: BaseException, rid: int | None) -> None:
        assert is_expected(exc)
        self.metrics.errors.labels(getattr(exc, "code", "internal")).inc()
        self.outbox.personal(session, wire_error(exc, rid))

    # -- stats -------------------------------------------------------------------------------------
    def lag_max(self) -> float:
        return max(self.lags, default=0.0)

    def stats(self) -> dict[str, Any]:
        """Players and the room's own numbers (``Room.describe``), for the monitor."""
        extra = self._call(None, None, "describe", self.room.describe, reply=False)
        out: dict[str, Any] = {"players": len(self.members), "room": self.kind}
        if isinstance(extra, dict):
            out.update(extra)
        return out


_FAILED = object()   # what ``_call`` returns when room code raised

