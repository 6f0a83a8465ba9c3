"""Single-process implementations of the cluster seams (the default: one node, nothing shared).

A ``LocalHub`` holds the shared state; nodes given the same hub behave like nodes sharing one Redis, which
lets tests run several ``GameServer`` nodes in one process without Redis. Without a hub argument each
backend gets its own hub (one node). Lease expiry uses the monotonic clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from ..leaderboard import Leaderboard
from .interfaces import Handler, NodeInfo, SessionEntry


class LocalHub:
    """State shared by the ``Local*`` implementations of the nodes of one process."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, float]] = {}      # room -> (node, monotonic expiry)
        self.nodes: dict[str, NodeInfo] = {}
        self.sessions: dict[str, tuple[SessionEntry, float | None]] = {}   # name -> (entry, expiry)
        self.replays: dict[str, tuple[str, float]] = {}   # session id -> (replay buffer, expiry)
        self.handlers: dict[str, Handler] = {}
        self.board = Leaderboard()
        self.seats: dict[str, dict[int, dict[str, float]]] = {}   # kind -> number -> session -> expiry


class LocalRoomLeases:
    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    def _holder(self, room: str) -> str | None:
        held = self.hub.leases.get(room)
        if held is None:
            return None
        if held[1] <= time.monotonic():
            del self.hub.leases[room]
            return None
        return held[0]

    async def acquire(self, room: str, node: str, ttl: float) -> str:
        holder = self._holder(room)
        if holder is None or holder == node:
            self.hub.leases[room] = (node, time.monotonic() + ttl)
            return node
        return holder

    async def owner(self, room: str) -> str | None:
        return self._holder(room)

    async def renew(self, rooms: Iterable[str], node: str, ttl: float) -> set[str]:
        lost = set()
        for room in rooms:
            if self._holder(room) == node:
                self.hub.leases[room] = (node, time.monotonic() + ttl)
            else:
                lost.add(room)
        return lost

    async def release(self, room: str, node: str) -> bool:
        if self._holder(room) == node:
            del self.hub.leases[room]
            return True
        return False


class LocalPresence:
    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    async def announce(self, info: NodeInfo) -> None:
        self.hub.nodes[info.node] = info

    async def get(self, node: str) -> NodeInfo | None:
        return self.hub.nodes.get(node)

    async def nodes(self) -> list[NodeInfo]:
        return list(self.hub.nodes.values())

    async def withdraw(self, node: str) -> None:
        self.hub.nodes.pop(node, None)


class LocalSessionDirectory:
    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    def _entry(self, name: str) -> SessionEntry | None:
        held = self.hub.sessions.get(name)
        if held is None:
            return None
        if held[1] is not None and held[1] <= time.monotonic():
            del self.hub.sessions[name]
            return None
        return held[0]

    def _put(self, name: str, entry: SessionEntry, ttl: float | None) -> None:
        self.hub.sessions[name] = (entry, None if ttl is None else time.monotonic() + ttl)

    async def claim(self, name: str, entry: SessionEntry, ttl: float | None = None) -> SessionEntry | None:
        old = self._entry(name)
        self._put(name, entry, ttl)
        return old

    async def get(self, name: str) -> SessionEntry | None:
        return self._entry(name)

    async def update(self, name: str, entry: SessionEntry, ttl: float | None = None) -> bool:
        old = self._entry(name)
        if old is None or old.session != entry.session:
            return False
        self._put(name, entry, ttl)
        return True

    async def release(self, name: str, session: str) -> bool:
        old = self._entry(name)
        if old is None or old.session != session:
            return False
        del self.hub.sessions[name]
        return True

    async def put_replay(self, session: str, text: str, ttl: float) -> None:
        now = time.monotonic()
        replays = self.hub.replays
        for sid in [sid for sid, (_text, expiry) in replays.items() if expiry <= now]:
            del replays[sid]   # bounded by the sessions handed off within one ttl
        replays[session] = (text, now + ttl)

    async def take_replay(self, session: str) -> str | None:
        held = self.hub.replays.pop(session, None)
        if held is None or held[1] <= time.monotonic():
            return None
        return held[0]


class LocalPubSub:
    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub
        self.mine: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def subscribe(self, node: str, handler: Handler) -> None:
        self.hub.handlers[node] = handler
        self.mine.add(node)

    async def publish(self, node: str, message: dict[str, Any]) -> None:
        handler = self.hub.handlers.get(node)
        if handler is None:
            return   # like Redis: nobody subscribed, the message is gone
        task = asyncio.get_running_loop().create_task(handler(dict(message)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for node in self.mine:
            self.hub.handlers.pop(node, None)
        self.mine.clear()


class LocalSeats:
    """Seats in the hub; each call runs without an await, so it is atomic among the nodes of a process."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    def _kind(self, kind: str) -> dict[int, dict[str, float]]:
        rooms = self.hub.seats.setdefault(kind, {})
        rooms.setdefault(1, {})
        now = time.monotonic()
        for held in rooms.values():
            for session in [s for s, expiry in held.items() if expiry <= now]:
                del held[session]
        return rooms

    @staticmethod
    def _expiry(ttl: float) -> float:
        return time.monotonic() + ttl

    async def take(self, kind: str, session: str, max_players: int, ttl: float) -> int:
        rooms = self._kind(kind)
        for number in sorted(rooms):
            if session in rooms[number]:
                rooms[number][session] = self._expiry(ttl)
                return number
        free = [(-len(held), number) for number, held in rooms.items() if len(held) < max_players]
        number = min(free)[1] if free else next(n for n in range(2, len(rooms) + 3) if n not in rooms)
        rooms.setdefault(number, {})[session] = self._expiry(ttl)
        return number

    async def take_exact(self, kind: str, number: int, session: str, max_players: int, ttl: float) -> str:
        rooms = self._kind(kind)
        held = rooms.get(number)
        if held is None:
            return "none"
        if session not in held and len(held) >= max_players:
            return "full"
        held[session] = self._expiry(ttl)
        return "ok"

    async def release(self, kind: str, number: int, session: str) -> None:
        self._kind(kind).get(number, {}).pop(session, None)

    async def refresh(self, kind: str, number: int, sessions: Iterable[str], ttl: float) -> None:
        held = self._kind(kind).get(number)
        if held is not None:
            expiry = self._expiry(ttl)
            for session in sessions:
                if session in held:
                    held[session] = expiry

    async def instances(self, kind: str) -> list[tuple[int, int]]:
        return [(number, len(held)) for number, held in sorted(self._kind(kind).items())]

    async def dispose(self, kind: str, number: int) -> bool:
        rooms = self._kind(kind)
        if number == 1 or rooms.get(number):
            return False
        rooms.pop(number, None)
        return True


class LocalRanking:
    """The ranking as an in-memory ``Leaderboard`` (XP never decreases)."""

    def __init__(self, board: Leaderboard) -> None:
        self.board = board

    async def record(self, name: str, xp: int, level: int) -> None:
        self.board.raise_to(name, xp, level)

    async def record_many(self, entries: Iterable[tuple[str, int, int]]) -> None:
        for name, xp, level in entries:
            self.board.raise_to(name, xp, level)

    async def top(self, n: int) -> list[dict[str, Any]]:
        return self.board.top(n)


class LocalBackend:
    """Every seam in this process. ``hub=None``: a private hub and no shared ranking (one node)."""

    def __init__(self, hub: LocalHub | None = None) -> None:
        self.shared = hub is not None
        self.hub = hub or LocalHub()
        self.leases = LocalRoomLeases(self.hub)
        self.presence = LocalPresence(self.hub)
        self.directory = LocalSessionDirectory(self.hub)
        self.pubsub = LocalPubSub(self.hub)
        self.ranking: LocalRanking | None = LocalRanking(self.hub.board) if self.shared else None
        self.seats = LocalSeats(self.hub)

    async def close(self) -> None:
        await self.pubsub.close()
