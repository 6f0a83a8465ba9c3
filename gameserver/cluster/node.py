"""``ClusterNode``: this server's part in a cluster (room leases, session directory, control messages).

Without a ``cluster`` config section the node is alone: it owns every room from start-up (local leases that
never expire), and every method below is a no-op or answers "here", so behaviour is exactly single-node.

With it (guarantees, see docs/scale-out.md):
- a room's runner ticks only on the node holding the room's lease; ``ensure_room`` acquires a free room,
  waits out the lease of a dead owner, or names the live owner (the caller then redirects the player);
- the directory maps each character to its one session; a login elsewhere tells the old node ``replace``
  (its socket gets ``bye replaced``) and waits for it to flush the character before reading it;
- a session leaves a node only through ``hand_off``: detach, flush, mark it "in transit" in the directory
  (resumable anywhere until the grace deadline), then optionally ``redirect`` the socket with a token;
- ``adopt`` takes over a session on ``resume`` (asking its node to hand it off first if that node lives).
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
from typing import TYPE_CHECKING, Any

from ..logs import event
from ..session import Link, Session
from ..tokens import BadToken, TokenClaims
from .interfaces import Backend, NodeInfo, SessionEntry
from .local import LocalBackend

if TYPE_CHECKING:
    from ..app import GameServer
    from ..characters import Character

log = logging.getLogger("gameserver.cluster")


class RoomUnavailable(Exception):
    code = "internal"


def default_node_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class ClusterNode:
    def __init__(self, server: GameServer, backend: Backend | None = None) -> None:
        self.server = server
        cfg = server.config.cluster
        self.cfg = cfg
        self.enabled = cfg is not None
        self.backend: Backend | None = backend
        self.node_id = (cfg.node_id if cfg else None) or default_node_id()
        self.ttl = cfg.lease_ttl if cfg else math.inf
        self.url = ""
        self.owned: set[str] = set()
        self._idle_since: dict[str, float] = {}
        self._acks: dict[str, asyncio.Future[None]] = {}
        self.suspects: dict[str, float] = {}   # node -> its last heartbeat when it failed to answer us
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

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
        host = self.server.config.host
        self.url = (cfg.public_url if cfg else None) or f"ws://{host}:{port}/ws"
        if cfg is None:
            for room in self.server.runners:
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
            grace = self.server.config.auth.grace_seconds
            with contextlib.suppress(Exception):
                for session in list(self.server.registry):
                    entry = SessionEntry(session.id, "", "", time.time() + grace)
                    await b.directory.update(session.name, entry, ttl=grace + self.ttl)
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
        runner = self.server.runners[room]
        if runner._task is None:
            runner.start()

    async def ensure_room(self, room: str) -> NodeInfo | None:
        """None when this node owns ``room`` (acquiring it if free); else the live owner's info.

        Call it last before submitting to the room's runner (no await in between), so the runner is running.
        A lease held by a node that stopped heartbeating is waited out (at most the lease ttl).
        """
        if room in self.owned:
            self._idle_since[room] = time.monotonic()
            return None
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
            runner = self.server.runners[room]
            if runner.by_pid or runner.inputs or room in self.cfg.rooms:
                self._idle_since[room] = now
            elif now - self._idle_since.get(room, now) >= self.cfg.idle_release:
                self.owned.discard(room)
                await runner.stop()
                await self.backend.leases.release(room, self.node_id)
                event(log, "room_released", node=self.node_id, room=room)

    async def _lost(self, room: str) -> None:
        """Our lease on ``room`` is gone (we stalled past the ttl): get it back or send its players on."""
        assert self.backend is not None
        owner = await self.backend.leases.acquire(room, self.node_id, self.ttl)
        if owner == self.node_id:
            return
        event(log, "room_lost", level=logging.WARNING, node=self.node_id, room=room, owner=owner)
        self.owned.discard(room)
        runner = self.server.runners[room]
        await runner.stop()
        info = await self.backend.presence.get(owner)
        sessions = {s for s in self.server.registry if s.runner is runner or s.target is runner}
        for session in sessions:
            await self.hand_off(session, room=room, target=info, bye=None if info else "shutdown")

    # -- sessions ----------------------------------------------------------------------------------------
    async def hand_off(self, session: Session, *, room: str = "", target: NodeInfo | None = None,
                       rid: int | None = None, bye: str | None = None) -> None:
        """Move ``session`` off this node: detach, flush, mark in transit, then redirect or bye its socket."""
        server = self.server
        link = session.link
        session.ended = True
        if session.grace_task is not None:
            session.grace_task.cancel()
            session.grace_task = None
        if session.runner is not None:
            session.runner.detach(session)
        session.forget_inputs()
        server.registry.remove(session)
        server.metrics.sessions.set(len(server.registry))
        if link is not None:
            link.session = None
            session.link = None
            if bye is not None:
                link.bye(bye)
        grace = server.config.auth.grace_seconds
        await self.mark_in_transit(session.name, session.id, room)
        await server._save(session.character)
        if server.registry.by_name(session.name) is None:
            server.characters.release(session.name)
        event(log, "handed_off", node=self.node_id, name=session.name, session=session.id,
              to=target.node if target else None, grace=grace)
        if link is not None and target is not None and bye is None:
            self.send_redirect(link, session.id, session.name, target, rid)

    async def mark_in_transit(self, name: str, session_id: str, room: str = "") -> bool:
        assert self.backend is not None
        grace = self.server.config.auth.grace_seconds
        return await self.backend.directory.update(
            name, SessionEntry(session_id, "", room, time.time() + grace), ttl=grace + self.ttl)

    def send_redirect(self, link: Link, session_id: str, name: str, target: NodeInfo,
                      rid: int | None) -> None:
        body: dict[str, Any] = {"t": "redirect", "url": target.url,
                                "token": self.server.signer.issue(session_id, name, time.time())}
        if rid is not None:
            body["rid"] = rid
        link.send(body)

    async def claim_login(self, name: str, session_id: str, ch: Character) -> NodeInfo | None:
        """Make ``session_id`` the character's session everywhere; None: play here, else the room's owner."""
        if not self.enabled:
            return None
        assert self.backend is not None
        prev = await self.backend.directory.claim(name, SessionEntry(session_id, self.node_id))
        if prev is not None and prev.node and prev.node != self.node_id:
            info = await self.backend.presence.get(prev.node)
            if self._alive(info):
                await self.ask(prev.node, {"op": "replace", "name": name, "session": prev.session}, info)
            await self.server.characters.reload(ch)
        elif prev is not None and not prev.node and self.server.registry.by_name(name) is None:
            await self.server.characters.reload(ch)
        room = ch.room if ch.room in self.server.runners else self.server.config.game.start_room
        target = await self.ensure_room(room)
        if target is not None:
            await self.mark_in_transit(name, session_id)
        return target

    async def session_ended(self, session: Session) -> None:
        if self.enabled and self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.directory.release(session.name, session.id)

    async def adopt(self, link: Link, claims: TokenClaims, rid: int | None) -> tuple[Session, bool] | None:
        """Take over a session registered elsewhere (resume on another node).

        Returns (session, pending_room): the session registered here, and whether it enters its room at the
        spawn point (a redirected ``join``) rather than at its saved place; None when ``link`` was redirected.
        Raises BadToken when the session is over.
        """
        if not self.enabled:
            return None
        assert self.backend is not None
        server, name = self.server, claims.name
        entry = await self.backend.directory.get(name)
        if entry is None or entry.session != claims.session or entry.node == self.node_id:
            raise BadToken("session expired or unknown")
        now = time.time()
        grace = server.config.auth.grace_seconds
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
            elif (info.seen if info is not None else 0.0) + self.ttl + grace < now:
                raise BadToken("session expired")
        elif entry.deadline < now:
            raise BadToken("session expired")
        ch = await server.characters.adopt(name)
        room = entry.room or ch.room
        if room not in server.runners:
            room = server.config.game.start_room
        pending = bool(entry.room) or room != ch.room
        try:
            target = await self.ensure_room(room)
        except BaseException:
            self._release_if_unused(name)
            raise
        if target is not None:
            self._release_if_unused(name)
            self.send_redirect(link, claims.session, name, target, rid)
            return None
        if not await self.backend.directory.update(name, SessionEntry(claims.session, self.node_id)):
            self._release_if_unused(name)
            raise BadToken("session was replaced")
        if pending:
            ch.room = room
        event(log, "adopted", node=self.node_id, name=name, session=claims.session, room=room)
        return Session(claims.session, ch), pending

    def _release_if_unused(self, name: str) -> None:
        if self.server.registry.by_name(name) is None:
            self.server.characters.release(name)

    async def refresh(self, ch: Character) -> None:
        """Before answering ``me``: XP may have been granted by another node."""
        if self.enabled:
            await self.server.characters.refresh_xp(ch)

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
            event(log, "ask_timeout", level=logging.WARNING, node=node, op=message.get("op"))
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
        server = self.server
        op = msg.get("op")
        if op == "ack":
            fut = self._acks.get(str(msg.get("id")))
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif op == "replace":
            old = server.registry.get(str(msg.get("session")))
            if old is not None:
                server._replace(old)
                server.metrics.sessions.set(len(server.registry))
                await server._save(old.character)
                self._release_if_unused(old.name)
        elif op == "handoff":
            session = server.registry.get(str(msg.get("session")))
            if session is not None:
                await self.hand_off(session, bye="replaced")
        elif op == "xp":
            session = server.registry.by_name(str(msg.get("name")))
            body = msg.get("body")
            if session is not None and isinstance(body, dict):
                session.character.xp, session.character.level = int(body["xp"]), int(body["level"])
                session.send(body)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
