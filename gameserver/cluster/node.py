"""``ClusterNode``: this server's part in a cluster (room leases, session directory, control messages).

Without a ``cluster`` config section the node is alone: it owns every room from start-up (local leases that
never expire), and every method below is a no-op or answers "here", so behaviour is exactly single-node.

With it (guarantees, see docs/scale-out.md):
- a room's runner ticks only on the node holding the room's lease; ``ensure_room`` acquires a free room,
  waits out the lease of a dead owner, or names the live owner (the caller then redirects the player);
- the directory maps each character to its one session; ``claim_session`` makes a new login the one, and
  tells the old node ``replace`` (its socket gets ``bye replaced``), waiting for it to flush the character;
- a session leaves a node only through a hand-off (``gameserver.sessions``): detach, flush, mark it "in
  transit" here (resumable anywhere until the grace deadline), leave its replay buffer for the node that
  adopts it (``store_replay`` / ``take_replay``), then optionally ``redirect`` the socket;
- ``reclaim`` checks that a session registered elsewhere may be taken over on ``resume`` (asking its node
  to hand it off first if that node lives).

The node only coordinates: what happens to sessions it asks of a ``NodeEvents`` (the session manager), and
rooms start and stop through the ``RoomHost``. It never sees the server object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BadToken, RoomUnavailable
from ..logs import event
from ..tokens import TokenClaims, TokenSigner
from .interfaces import Backend, NodeInfo, SessionEntry
from .local import LocalBackend

if TYPE_CHECKING:
    from ..config import ClusterConfig
    from ..rooms.host import RoomHost

log = logging.getLogger("gameserver.cluster")

__all__ = ["ClusterNode", "NodeEvents", "RoomUnavailable", "default_node_id"]


class NodeEvents(Protocol):
    """What other nodes can ask of this node's sessions (implemented by ``gameserver.sessions``)."""

    async def replace_session(self, session_id: str) -> None:
        """The character logged in elsewhere: end this session (``bye replaced``), flush, release."""
        ...

    async def hand_off_session(self, session_id: str) -> None:
        """The session is being resumed elsewhere: hand it off (``bye replaced`` to its socket)."""
        ...

    def deliver_xp(self, name: str, body: dict[str, Any]) -> None:
        """An ``xp`` granted on another node for a character whose session is here."""
        ...

    async def room_lost(self, room: str, owner: NodeInfo | None) -> None:
        """Another node holds ``room`` now: send its players there (or away when it is unknown)."""
        ...

    def live_sessions(self) -> list[tuple[str, str]]:
        """(character name, session id) of every session of this node."""
        ...


def default_node_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class ClusterNode:
    def __init__(self, cfg: ClusterConfig | None, rooms: RoomHost, signer: TokenSigner, *, host: str,
                 grace: float, backend: Backend | None = None) -> None:
        self.cfg = cfg
        self.rooms = rooms
        self.signer = signer
        self.host = host
        self.grace = grace
        self.enabled = cfg is not None
        self.backend: Backend | None = backend
        self.events: NodeEvents | None = None
        self.node_id = (cfg.node_id if cfg else None) or default_node_id()
        self.ttl = cfg.lease_ttl if cfg else math.inf
        self.url = ""
        self.owned: set[str] = set()
        self._idle_since: dict[str, float] = {}
        self._acks: dict[str, asyncio.Future[None]] = {}
        self.suspects: dict[str, float] = {}   # node -> its last heartbeat when it failed to answer us
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retiring: dict[str, asyncio.Event] = {}   # rooms whose lease is being given up

    @property
    def seat_ttl(self) -> float:
        """How long a seat outlives its last refresh: alone forever; clustered a lease plus the grace
        period (a dead node's sessions may resume elsewhere until then)."""
        return self.ttl + self.grace if self.enabled else math.inf

    def bind(self, events: NodeEvents) -> None:
        """Who handles what other nodes ask of this node's sessions (before ``start``)."""
        self.events = events

    # -- start / stop --------------------------------------------------------------------------------
    async def start(self, port: int) -> None:
        """After the transport is bound: connect, subscribe, announce; alone: own and start every room."""
        cfg = self.cfg
        if self.backend is None:
            if cfg is not None and cfg.redis_url:
                from .redis_backend import RedisBackend
                self.backend = RedisBackend(cfg.redis_url, cfg.prefix)
            else:
                self.backend = LocalBackend()
        self.url = (cfg.public_url if cfg else None) or f"ws://{self.host}:{port}/ws"
        if cfg is None:
            for room in self.rooms:
                await self.backend.leases.acquire(room, self.node_id, self.ttl)
                self._take(room)
            return
        await self.backend.pubsub.subscribe(self.node_id, self._on_message)
        await self._heartbeat()
        await self._claim_home_rooms()
        self._loop_task = asyncio.get_running_loop().create_task(self._renew_loop())
        event(log, "cluster_joined", node=self.node_id, url=self.url)

    async def stop(self) -> None:
        """After sessions were flushed: their directory entries go in transit, leases are released."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.backend is None:
            return
        if self.enabled:
            b = self.backend
            with contextlib.suppress(Exception):
                for name, session_id in (self.events.live_sessions() if self.events else []):
                    entry = SessionEntry(session_id, "", "", time.time() + self.grace)
                    await b.directory.update(name, entry, ttl=self.grace + self.ttl)
                for room in list(self.owned):
                    await b.leases.release(room, self.node_id)
                await b.presence.withdraw(self.node_id)
        self.owned.clear()
        await self.backend.close()

    # -- rooms -----------------------------------------------------------------------------------------
    def owns(self, room: str) -> bool:
        return room in self.owned

    def _take(self, room: str) -> None:
        self.owned.add(room)
        self._idle_since[room] = time.monotonic()
        self.rooms.start(room)

    async def ensure_room(self, room: str) -> NodeInfo | None:
        """None when this node owns ``room`` (acquiring it if free); else the live owner's info.

        Call it last before submitting to the room's runner (no await in between), so the runner is running.
        A lease held by a node that stopped heartbeating is waited out (at most the lease ttl).
        """
        if room in self.owned:
            self._idle_since[room] = time.monotonic()
            return None
        retiring = self._retiring.get(room)
        if retiring is not None:   # its lease is being given up right now: take it afresh afterwards
            await retiring.wait()
        assert self.backend is not None
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (self.ttl if self.enabled else 0.0) + 1.0
        while True:
            owner = await self.backend.leases.acquire(room, self.node_id, self.ttl)
            if owner == self.node_id:
                self._take(room)
                return None
            info = await self.backend.presence.get(owner)
            if self._alive(info):
                return info
            if loop.time() > give_up:
                raise RoomUnavailable(f"room {room} is unavailable, try again")
            await asyncio.sleep(0.1)

    def _alive(self, info: NodeInfo | None) -> bool:
        """A node is alive while its heartbeat is within the ttl, unless it already failed to answer us
        since that heartbeat."""
        if info is None or not info.alive(time.time(), self.ttl):
            return False
        return self.suspects.get(info.node) != info.seen

    async def _claim_home_rooms(self) -> None:
        assert self.cfg is not None and self.backend is not None
        for room in self.cfg.rooms:
            if room not in self.owned:
                if await self.backend.leases.acquire(room, self.node_id, self.ttl) == self.node_id:
                    self._take(room)
                    event(log, "room_claimed", node=self.node_id, room=room)

    async def _renew_loop(self) -> None:
        assert self.cfg is not None
        while True:
            await asyncio.sleep(self.cfg.renew_interval)
            try:
                await self._heartbeat()
                assert self.backend is not None
                lost = await self.backend.leases.renew(list(self.owned), self.node_id, self.ttl)
                for room in lost:
                    await self._lost(room)
                await self._release_idle()
                await self._claim_home_rooms()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event(log, "renew_failed", level=logging.WARNING, node=self.node_id, error=repr(exc))

    async def _heartbeat(self) -> None:
        assert self.backend is not None
        await self.backend.presence.announce(NodeInfo(self.node_id, self.url, time.time()))

    async def _release_idle(self) -> None:
        assert self.cfg is not None and self.backend is not None
        now = time.monotonic()
        for room in list(self.owned):
            if not self.rooms.idle(room) or room in self.cfg.rooms:
                self._idle_since[room] = now
            elif now - self._idle_since.get(room, now) >= self.cfg.idle_release:
                self.owned.discard(room)
                await self.rooms.stop(room)
                await self.backend.leases.release(room, self.node_id)
                event(log, "room_released", node=self.node_id, room=room)

    async def give_up(self, room: str) -> None:
        """This node stops running ``room`` (a disposed instance): release its lease."""
        self.owned.discard(room)
        self._idle_since.pop(room, None)
        if self.backend is None:
            return
        done = self._retiring[room] = asyncio.Event()
        try:
            await self.backend.leases.release(room, self.node_id)
        finally:
            done.set()
            self._retiring.pop(room, None)

    async def _lost(self, room: str) -> None:
        """Our lease on ``room`` is gone (we stalled past the ttl): get it back or send its players on."""
        assert self.backend is not None
        owner = await self.backend.leases.acquire(room, self.node_id, self.ttl)
        if owner == self.node_id:
            return
        event(log, "room_lost", level=logging.WARNING, node=self.node_id, room=room,
              owner=owner)
        self.owned.discard(room)
        await self.rooms.stop(room)
        info = await self.backend.presence.get(owner)
        if self.events is not None:
            await self.events.room_lost(room, info)

    # -- sessions ----------------------------------------------------------------------------------------
    async def mark_in_transit(self, name: str, session_id: str, room: str = "") -> bool:
        """The session may be resumed on any node until the grace deadline (``room``: where it goes)."""
        if not self.enabled:
            return True
        assert self.backend is not None
        return await self.backend.directory.update(
            name, SessionEntry(session_id, "", room, time.time() + self.grace), ttl=self.grace + self.ttl)

    def redirect_body(self, session_id: str, name: str, target: NodeInfo, rid: int | None) -> dict[str, Any]:
        """The ``redirect`` sending a player to ``target`` with a token to resume ``session_id`` there."""
        body: dict[str, Any] = {"t": "redirect", "url": target.url,
                                "token": self.signer.issue(session_id, name, time.time())}
        if rid is not None:
            body["rid"] = rid
        return body

    async def claim_session(self, name: str, session_id: str, local: bool) -> bool:
        """Make ``session_id`` the character's one session everywhere (an older one elsewhere is replaced
        and flushed first). Returns True when the character record must be re-read (another node wrote it
        since we loaded it); ``local``: this node already has a session of the character."""
        if not self.enabled:
            return False
        assert self.backend is not None
        prev = await self.backend.directory.claim(name, SessionEntry(session_id, self.node_id))
        if prev is not None and prev.node and prev.node != self.node_id:
            info = await self.backend.presence.get(prev.node)
            if self._alive(info):
                await self.ask(prev.node, {"op": "replace", "name": name, "session": prev.session}, info)
            return True
        return prev is not None and not prev.node and not local

    async def session_ended(self, name: str, session_id: str) -> None:
        if self.enabled and self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.directory.release(name, session_id)

    async def reclaim(self, claims: TokenClaims) -> SessionEntry:
        """The directory entry of a session registered elsewhere that ``claims`` may take over here (its
        node is asked to hand it off first when it lives). Raises BadToken when the session is over."""
        assert self.enabled and self.backend is not None
        name = claims.name
        entry = await self.backend.directory.get(name)
        if entry is None or entry.session != claims.session or entry.node == self.node_id:
            raise BadToken("session expired or unknown")
        now = time.time()
        if entry.node:
            info = await self.backend.presence.get(entry.node)
            if self._alive(info):
                ask = {"op": "handoff", "name": name, "session": entry.session}
                answered = await self.ask(entry.node, ask, info)
                entry = await self.backend.directory.get(name)
                if entry is None or entry.session != claims.session:
                    raise BadToken("session was replaced")
                if entry.node and answered:
                    raise BadToken("session is not available")
            elif (info.seen if info is not None else 0.0) + self.ttl + self.grace < now:
                raise BadToken("session expired")
        elif entry.deadline < now:
            raise BadToken("session expired")
        return entry

    async def store_replay(self, session_id: str, text: str) -> None:
        """Leave a handed-off session's replay buffer (``ReplayBuffer.export``) for the node that adopts it;
        kept as long as the session is resumable. Before the hand-off is acknowledged or redirected."""
        if self.enabled:
            assert self.backend is not None
            await self.backend.directory.put_replay(session_id, text, self.grace + self.ttl)

    async def take_replay(self, session_id: str) -> str | None:
        """The replay buffer a hand-off left for ``session_id``, removed (one node adopts); None when
        there is none (its node died, or the session never left one)."""
        if not self.enabled:
            return None
        assert self.backend is not None
        return await self.backend.directory.take_replay(session_id)

    async def confirm_session(self, name: str, session_id: str) -> bool:
        """Register an adopted session as this node's; False when it was replaced meanwhile."""
        assert self.backend is not None
        return await self.backend.directory.update(name, SessionEntry(session_id, self.node_id))

    def notify_xp(self, name: str, body: dict[str, Any]) -> None:
        """An ``xp`` for a character with no session here: forward it to the node that has it."""
        if self.enabled:
            self._spawn(self._forward(name, body))

    async def _forward(self, name: str, body: dict[str, Any]) -> None:
        assert self.backend is not None
        entry = await self.backend.directory.get(name)
        if entry is not None and entry.node and entry.node != self.node_id:
            await self.backend.pubsub.publish(entry.node, {"op": "xp", "name": name, "body": body})

    # -- control messages ----------------------------------------------------------------------------
    async def ask(self, node: str, message: dict[str, Any], info: NodeInfo | None = None) -> bool:
        """Publish ``message`` to ``node`` and wait (bounded) for its ``ack``; False on timeout, and then
        the node is suspected dead unless it heartbeats again (``info``: its presence when asked)."""
        assert self.backend is not None and self.cfg is not None
        mid = uuid.uuid4().hex
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[mid] = fut
        try:
            await self.backend.pubsub.publish(node, {**message, "id": mid, "from": self.node_id})
            await asyncio.wait_for(fut, self.cfg.handoff_timeout)
            return True
        except TimeoutError:
            event(log, "ask_timeout", level=logging.WARNING, node=node,
                  op=message.get("op"))
            if info is not None:
                now_info = await self.backend.presence.get(node)
                if now_info is None or now_info.seen == info.seen:
                    self.suspects[node] = info.seen
            return False
        finally:
            self._acks.pop(mid, None)

    async def _on_message(self, msg: dict[str, Any]) -> None:
        try:
            await self._handle(msg)
        except Exception as exc:
            event(log, "control_failed", level=logging.ERROR, op=msg.get("op"), error=repr(exc))
        if msg.get("op") in ("replace", "handoff") and msg.get("from") and self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.pubsub.publish(str(msg["from"]), {"op": "ack", "id": msg.get("id")})

    async def _handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ack":
            fut = self._acks.get(str(msg.get("id")))
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif self.events is None:
            return
        elif op == "replace":
            await self.events.replace_session(str(msg.get("session")))
        elif op == "handoff":
            await self.events.hand_off_session(str(msg.get("session")))
        elif op == "xp":
            body = msg.get("body")
            if isinstance(body, dict):
                self.events.deliver_xp(str(msg.get("name")), body)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
