"""The room instances this server can run, by name, and the one place that builds their runners.

``RoomHost`` turns the configured room types (``gameserver.rooms.registry``) into runners (room instance +
``Outbox`` + the events callback), starts and stops them (the cluster node decides which rooms this node
runs), and answers what the router needs: the runner of a room name, and which message types some room
type of this server registers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..outbox import Outbox
from .registry import RoomType, create_room
from .runner import RoomEvents, RoomRunner

if TYPE_CHECKING:
    from ..metrics import Metrics


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

    def _make(self, rt: RoomType, instance: str) -> RoomRunner:
        room = create_room(rt, instance)
        return RoomRunner(room, Outbox(self.metrics), self.events, self.metrics, tick_rate=rt.tick_rate,
                          max_inputs=self.max_inputs, max_players=rt.max_players, kind=rt.name)

    def model_for(self, t: str) -> Any:
        """The model of message type ``t`` of the first room type registering it."""
        return next(rt.cls.messages[t][0] for rt in self.types.values() if t in rt.cls.messages)

    def get(self, name: str) -> RoomRunner | None:
        return self.runners.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.runners

    def __iter__(self) -> Iterator[str]:
        return iter(self.runners)

    def __len__(self) -> int:
        return len(self.runners)

    def spawn_points(self) -> dict[str, tuple[float, float]]:
        return {name: r.spawn_point() for name, r in self.runners.items()}

    def start(self, name: str) -> None:
        runner = self.runners[name]
        if not runner.running:
            runner.start()

    async def stop(self, name: str) -> None:
        await self.runners[name].stop()

    def idle(self, name: str) -> bool:
        """Nobody is in the room and nothing is queued for it."""
        runner = self.runners[name]
        return not runner.members and not runner.inputs

    async def stop_all(self) -> None:
        for runner in self.runners.values():
            await runner.stop()
