"""The room instances this server runs, by instance id, and the one place that builds their runners.

``RoomHost`` turns the configured room types (``gameserver.rooms.registry``) into runners (room instance +
``Outbox`` + the events callback). Every configured room has a first instance named like the room, built at
start-up (so a bad room type fails the start); rooms with ``max_players`` get more instances on demand,
``NAME~2``, ``NAME~3``, ... (the number comes from the cluster's ``Seats``, atomically). The cluster node
decides which instances this node runs (``start`` / ``stop``); ``sweep`` disposes of instances other than
the first once they have been empty, with no seat held, for the room's ``idle_dispose`` seconds, and
refreshes the seats of the players here so they do not expire.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from shared.messages import instance_id, instance_number, room_kind

from ..logs import event
from ..outbox import Outbox
from .registry import RoomType, create_room
from .runner import RoomEvents, RoomRunner

if TYPE_CHECKING:
    from ..cluster.interfaces import Seats
    from ..metrics import Metrics
    from ..session import Session

log = logging.getLogger("gameserver.rooms")


class RoomHost:
    def __init__(self, types: list[RoomType], events: RoomEvents, metrics: Metrics, *,
                 max_inputs: int) -> None:
        self.types = {t.name: t for t in types}
        self.events = events
        self.metrics = metrics
        self.max_inputs = max_inputs
        self.runners: dict[str, RoomRunner] = {}
        for rt in types:
            self.runners[rt.name] = self._make(rt, rt.name)
        self.message_types = frozenset().union(*(rt.messages for rt in types))
        self.seats: Seats | None = None           # bound at start-up (the cluster backend's)
        self.seat_ttl = math.inf                  # finite when clustered: a dead node's seats expire
        self.spawn: Callable[[Awaitable[Any]], None] = _no_spawn
        self._idle_since: dict[str, float] = {}
        self._refreshed = 0.0
        self._count_instances()

    def _make(self, rt: RoomType, instance: str) -> RoomRunner:
        room = create_room(rt, instance)
        return RoomRunner(room, Outbox(self.metrics), self.events, self.metrics, tick_rate=rt.tick_rate,
                          max_inputs=self.max_inputs, max_players=rt.max_players, kind=rt.name)

    def _count_instances(self) -> None:
        counts = dict.fromkeys(self.types, 0)
        for runner in self.runners.values():
            counts[runner.kind] += 1
        for kind, n in counts.items():
            self.metrics.room_instances.labels(kind).set(n)

    # -- names ---------------------------------------------------------------------------------------
    def resolve(self, room: str) -> tuple[RoomType, int] | None:
        """(room type, instance number) of a room name or instance id; None when there is no such room."""
        rt = self.types.get(room_kind(room))
        number = instance_number(room)
        if rt is None or number is None or (number > 1 and rt.max_players is None):
            return None
        return rt, number

    def model_for(self, t: str) -> Any:
        """The model of message type ``t`` of the first room type registering it."""
        return next(rt.cls.messages[t][0] for rt in self.types.values() if t in rt.cls.messages)

    def get(self, name: str) -> RoomRunner | None:
        """The runner of an instance this node has built (running or not)."""
        return self.runners.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def __iter__(self) -> Iterator[str]:
        """The configured rooms (their first instances)."""
        return iter(self.types)

    def __len__(self) -> int:
        return len(self.types)

    def spawn_points(self) -> dict[str, tuple[float, float]]:
        return {name: self.runners[name].spawn_point() for name in self.types}

    # -- lifecycle (driven by the cluster node) ------------------------------------------------------
    def start(self, name: str) -> RoomRunner:
        """Run instance ``name`` here (built now if it is new)."""
        runner = self.runners.get(name)
        if runner is None:
            found = self.resolve(name)
            if found is None:
                raise KeyError(name)
            runner = self.runners[name] = self._make(found[0], name)
            self._count_instances()
            event(log, "instance_created", room=found[0].name, instance=name)
        if not runner.running:
            runner.start()
        self._idle_since[name] = time.monotonic()
        return runner

    async def stop(self, name: str) -> None:
        runner = self.runners.get(name)
        if runner is not None:
            await runner.stop()

    def idle(self, name: str) -> bool:
        """Nobody is in the room and nothing is queued for it."""
        runner = self.runners.get(name)
        return runner is None or (not runner.members and not runner.inputs)

    async def stop_all(self) -> None:
        """Shutdown, first step: no more ticks (players are still in, their ``on_leave`` comes next)."""
        for runner in list(self.runners.values()):
            await runner.stop()

    def dispose_all(self) -> None:
        """Shutdown, last step: every instance's ``on_dispose``."""
        for runner in list(self.runners.values()):
            runner.dispose()

    # -- seats -------------------------------------------------------------------------------------------
    def release_seat(self, session: Session, instance: str) -> None:
        """``session`` no longer holds its seat in ``instance`` (left it, or never got in)."""
        if instance not in session.seats:
            return
        session.seats.discard(instance)
        found = self.resolve(instance)
        if found is not None and self.seats is not None:
            self.spawn(self.seats.release(found[0].name, found[1], session.id))

    async def listing(self, kind: str) -> list[dict[str, Any]]:
        """What ``rooms {room: kind}`` answers: every instance, its players (seats held) and seats."""
        rt = self.types[kind]
        if rt.max_players is None or self.seats is None:
            runner = self.runners[kind]
            return [{"room": kind, "players": len(runner.members)}]   # no limit: no max_players
        return [{"room": instance_id(kind, n), "players": taken, "max_players": rt.max_players}
                for n, taken in await self.seats.instances(kind)]

    async def sweep(self, owned: set[str], give_up: Callable[[str], Awaitable[None]]) -> None:
        """Once a second: refresh the seats of players here; dispose of instances idle long enough."""
        if self.seats is None:
            return
        now = time.monotonic()
        if math.isfinite(self.seat_ttl) and now - self._refreshed >= min(5.0, self.seat_ttl / 4):
            self._refreshed = now
            for name in list(owned):
                runner = self.runners.get(name)
                found = self.resolve(name)
                if runner is not None and found is not None and found[0].max_players is not None:
                    await self.seats.refresh(found[0].name, found[1], runner.seated(), self.seat_ttl)
        for name, runner in list(self.runners.items()):
            found = self.resolve(name)
            if found is None or found[1] == 1 or name not in owned:
                continue
            if not self.idle(name):
                self._idle_since[name] = now
                continue
            if now - self._idle_since.setdefault(name, now) < found[0].idle_dispose:
                continue
            if not await self.seats.dispose(found[0].name, found[1]):
                self._idle_since[name] = now   # a seat is held (a player in its grace, a join on its way)
                continue
            if not self.idle(name) or self.runners.get(name) is not runner:
                continue   # a join arrived while the seats were asked: it re-created the instance
            del self.runners[name]
            self._idle_since.pop(name, None)
            self._count_instances()
            await give_up(name)
            await runner.stop()
            runner.dispose()
            event(log, "instance_disposed", room=found[0].name, instance=name)


def _no_spawn(coro: Awaitable[Any]) -> None:
    raise RuntimeError("RoomHost.spawn is not bound")
