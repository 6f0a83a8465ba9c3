"""The scale-out seams: what several game server nodes share, as protocols.

Every protocol has a ``Local*`` implementation (``gameserver.cluster.local``: one process, the default) and a
Redis one (``gameserver.cluster.redis_backend``); ``tests/cluster/test_contracts.py`` runs the same contract
over both. Node ids and room names are plain strings; times are Unix wall-clock seconds.

- ``RoomLeases``: each room is owned by at most one node at a time; a lease expires ``ttl`` after its last
  renewal, so a dead node's rooms free themselves.
- ``Presence``: which nodes exist, their public websocket URL and when they were last seen.
- ``SessionDirectory``: character -> its one live session (session id, node, pending room, grace deadline);
  what a ``resume`` on any node needs besides the character record in the datastore; plus the replay
  buffer a hand-off leaves for the node that adopts the session.
- ``PubSub``: one inbox per node for control messages (replace, handoff, xp, acknowledgements).
- ``Ranking``: the leaderboard every node reads (``top``).
- ``Seats``: the seats of every instance of every room with ``max_players``: taking one is atomic
  (join-or-create), so simultaneous joins never overfill an instance and never create twin instances.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class NodeInfo:
    node: str
    url: str
    seen: float          # last heartbeat (Unix seconds)

    def alive(self, now: float, ttl: float) -> bool:
        return self.seen + ttl > now


@dataclass(frozen=True)
class SessionEntry:
    """The directory's record of a character's live session.

    ``node`` is ``""`` while the session is in transit (redirected, handed off, or its node shut down):
    then any node may adopt it until ``deadline``. ``room`` is a pending room (the target of a redirected
    ``join``: the player enters it at its spawn point); ``""`` means the character record's room and place.
    """

    session: str
    node: str = ""
    room: str = ""
    deadline: float = 0.0

    def fields(self) -> dict[str, str]:
        return {"session": self.session, "node": self.node, "room": self.room,
                "deadline": repr(self.deadline)}

    @classmethod
    def from_fields(cls, raw: dict[str, Any]) -> SessionEntry | None:
        if not raw or "session" not in raw:
            return None
        return cls(str(raw["session"]), str(raw.get("node", "")), str(raw.get("room", "")),
                   float(raw.get("deadline", 0.0) or 0.0))


class RoomLeases(Protocol):
    async def acquire(self, room: str, node: str, ttl: float) -> str:
        """Take the lease if free (or renew it if ``node`` holds it); returns the owner after the call."""
        ...

    async def owner(self, room: str) -> str | None: ...

    async def renew(self, rooms: Iterable[str], node: str, ttl: float) -> set[str]:
        """Extend ``node``'s leases; returns the rooms it no longer holds (expired or taken)."""
        ...

    async def release(self, room: str, node: str) -> bool:
        """Drop the lease if ``node`` holds it."""
        ...


class Presence(Protocol):
    async def announce(self, info: NodeInfo) -> None: ...
    async def get(self, node: str) -> NodeInfo | None: ...
    async def nodes(self) -> list[NodeInfo]: ...
    async def withdraw(self, node: str) -> None: ...


class SessionDirectory(Protocol):
    async def claim(self, name: str, entry: SessionEntry, ttl: float | None = None) -> SessionEntry | None:
        """Make ``entry`` the character's session unconditionally; returns the previous one."""
        ...

    async def get(self, name: str) -> SessionEntry | None: ...

    async def update(self, name: str, entry: SessionEntry, ttl: float | None = None) -> bool:
        """Replace the entry only if it still names ``entry.session`` (compare-and-set on the session id)."""
        ...

    async def release(self, name: str, session: str) -> bool:
        """Delete the entry only if it still names ``session``."""
        ...

    async def put_replay(self, session: str, text: str, ttl: float) -> None:
        """Keep ``session``'s replay buffer (opaque text) for ``ttl`` seconds, replacing an older one."""
        ...

    async def take_replay(self, session: str) -> str | None:
        """``session``'s kept replay buffer, removed in the same step (two takers never both get it)."""
        ...


Handler = Callable[[dict[str, Any]], Awaitable[None]]


class PubSub(Protocol):
    async def subscribe(self, node: str, handler: Handler) -> None:
        """Deliver every message published to ``node`` to ``handler`` (each in its own task)."""
        ...

    async def publish(self, node: str, message: dict[str, Any]) -> None: ...
    async def close(self) -> None: ...


class Ranking(Protocol):
    async def record(self, name: str, xp: int, level: int) -> None:
        """Note a character's XP; a lower XP than already recorded is ignored (XP never decreases)."""
        ...

    async def record_many(self, entries: Iterable[tuple[str, int, int]]) -> None: ...
    async def top(self, n: int) -> list[dict[str, Any]]: ...


class Seats(Protocol):
    """Seats of room instances (rooms with ``max_players``), keyed by session id so a retry is harmless.

    Instance numbers: 1 is the room's first instance (named like the room), 2, 3, ... the others
    (``NAME~n``). A seat expires ``ttl`` seconds after it was taken or last refreshed (the node running the
    instance refreshes the seats of its players; a dead node's seats free themselves).
    """

    async def take(self, kind: str, session: str, max_players: int, ttl: float) -> int:
        """Join-or-create, atomically: the session's seat in an instance of ``kind`` if it has one, else a
        seat in the instance with the most seats taken that still has a free one (lowest number on ties),
        else in a new instance with the lowest free number. Returns the instance number."""
        ...

    async def take_exact(self, kind: str, number: int, session: str, max_players: int, ttl: float) -> str:
        """A seat in that instance: ``"ok"`` (also when the session already holds it), ``"full"``, or
        ``"none"`` when the instance does not exist."""
        ...

    async def release(self, kind: str, number: int, session: str) -> None: ...

    async def refresh(self, kind: str, number: int, sessions: Iterable[str], ttl: float) -> None:
        """Extend the seats these sessions hold in that instance (seats they do not hold are not taken)."""
        ...

    async def instances(self, kind: str) -> list[tuple[int, int]]:
        """(instance number, seats taken) of every instance of ``kind``, by number (1 always listed)."""
        ...

    async def dispose(self, kind: str, number: int) -> bool:
        """Forget an instance (never the first) if no seat is taken in it; False when one is."""
        ...


class Backend(Protocol):
    """One implementation of every seam, plus ``close``."""

    leases: RoomLeases
    presence: Presence
    directory: SessionDirectory
    pubsub: PubSub
    ranking: Ranking | None      # None: the node's own in-memory leaderboard is the ranking
    seats: Seats

    async def close(self) -> None: ...
