"""Session lifecycle, in one place: login, resume, replace, detach, grace, end, and hand-off between nodes.

- login: verify/create the character, make this session its one session (an older one, here or on another
  node, gets ``bye replaced``), ``welcome``, then queue a join of the character's room (``joined`` follows
  at the next tick, without rid). When that room lives on another node the socket gets ``redirect``.
- socket drop (``link_closed``): the session is detached (its player stays in the room), its character
  is flushed at once, and it ends after ``auth.grace_seconds`` unless resumed.
- resume: a valid token of a live session takes it over (an open old socket gets ``bye replaced``): same
  session id, ``welcome``, then a fresh ``joined`` of the same room and place. A session registered on
  another node is adopted: that node hands it off first, with its replay buffer. With the client's last
  ``seq``, ``welcome`` says ``recovered`` and every kept message after that seq follows the ``joined``
  (``Session.hold``; ``gameserver.replay``).
- end: the player leaves its room, the session is forgotten, the character is flushed and released.
- hand-off: the session leaves this node (its room lives elsewhere, or another node resumes it): detach,
  flush, mark it in transit in the cluster directory, leave its replay buffer there for the node that
  adopts it, then ``redirect`` (or ``bye``) its socket. A node that dies takes its buffers along: the
  resume elsewhere says ``recovered: false``.

``SessionManager`` also answers what other nodes ask of this node's sessions (``NodeEvents``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from shared.messages import INSTANCE_SEP, instance_id, room_kind

from .errors import BadToken, RequestError
from .logs import event
from .replay import ReplayBuffer
from .session import Link, Session

if TYPE_CHECKING:
    from .characters import Character, CharacterStore
    from .cluster.interfaces import NodeInfo
    from .cluster.node import ClusterNode
    from .config import ServerConfig
    from .metrics import Metrics
    from .registry import LocalSessionRegistry
    from .rooms.host import RoomHost
    from .rooms.runner import RoomRunner
    from .tokens import TokenClaims, TokenSigner

log = logging.getLogger("gameserver.sessions")

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class SessionManager:
    def __init__(self, config: ServerConfig, characters: CharacterStore, registry: LocalSessionRegistry,
                 signer: TokenSigner, rooms: RoomHost, cluster: ClusterNode, metrics: Metrics,
                 spawn: Spawn) -> None:
        self.config = config
        self.characters = characters
        self.registry = registry
        self.signer = signer
        self.rooms = rooms
        self.cluster = cluster
        self.metrics = metrics
        self.spawn = spawn
        self.grace = config.auth.grace_seconds
        self.start_room = config.game.start_room
        self.replay_limits = config.replay.limits(config.auth.grace_seconds, config.limits.idle_timeout)
        self.stopping = False

    # -- helpers -------------------------------------------------------------------------------------
    def _count(self) -> None:
        self.metrics.sessions.set(len(self.registry))

    def save_soon(self, ch: Character) -> None:
        """Flush one character in the background (leave, disconnect)."""
        self.spawn(self.save(ch))

    async def save(self, ch: Character) -> None:
        try:
            await self.characters.flush(ch)
        except Exception as exc:
            event(log, "flush_failed", level=logging.WARNING, name=ch.name, error=repr(exc))

    def _release_if_unused(self, name: str) -> None:
        if self.registry.by_name(name) is None:
            self.characters.release(name)

    def _welcome(self, session: Session, rid: int | None, tick_format: str | None = None,
                 recovery: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"t": "welcome", "session": session.id,
                "token": self.signer.issue(session.id, session.name, time.time()),
                "character": session.character.wire(), "tick_rate": float(self.config.game.tick_rate),
                "protocol": 1}
        if tick_format is not None:   # extension, only when asked: a v1 welcome stays byte for byte
            body["tick_format"] = tick_format
        if recovery:                  # extension, only for a resume with seq
            body.update(recovery)
        if rid is not None:
            body["rid"] = rid
        return body

    def _home(self, room: str) -> str:
        """``room`` if this server has it, else the start room (a room removed from the configuration)."""
        return room if room in self.rooms else self.start_room

    async def _seat(self, session_id: str, room: str, *, exact: bool, current: RoomRunner | None = None,
                    fallback: bool = False) -> str:
        """The instance of ``room`` to put the session in, its seat taken (rooms with ``max_players``).

        ``exact``: that instance or an error (``room_full``, ``no_such_room``); with ``fallback`` a full or
        gone instance falls back to join-or-create of its room (a saved place). Otherwise join-or-create: a
        session already in an instance of the room stays there.
        """
        found = self.rooms.resolve(room)
        if found is None:
            raise RequestError("no_such_room", f"no room {room!r}")
        rt, number = found
        seats = self.rooms.seats
        if rt.max_players is None or seats is None:
            return rt.name
        ttl = self.rooms.seat_ttl
        if exact:
            taken = await seats.take_exact(rt.name, number, session_id, rt.max_players, ttl)
            if taken == "ok":
                return instance_id(rt.name, number)
            if not fallback:
                if taken == "full":
                    raise RequestError("room_full", f"room {room} is full ({rt.max_players} players)")
                raise RequestError("no_such_room", f"no room {room!r}")
        elif current is not None and current.kind == rt.name:
            return current.name
        return instance_id(rt.name, await seats.take(rt.name, session_id, rt.max_players, ttl))

    def _unseat(self, session_id: str, instance: str) -> None:
        """Give back a seat taken for a placement that did not happen."""
        found = self.rooms.resolve(instance)
        seats = self.rooms.seats
        if found is not None and found[0].max_players is not None and seats is not None:
            self.spawn(seats.release(found[0].name, found[1], session_id))

    def _saved_room(self, ch: Character) -> tuple[str, bool]:
        """(room, exact) a character goes back to: its saved instance if the room is still configured."""
        room = self._home(ch.room)
        return room, INSTANCE_SEP in room

    def _gone(self, link: Link) -> bool:
        return link.closing or not link.sink.is_open or self.stopping

    # -- login / resume ------------------------------------------------------------------------------
    async def login(self, link: Link, name: str, secret: str, rid: int | None,
                    tick_format: str | None = None) -> None:
        ch = await self.characters.login(name, secret)
        session_id = uuid.uuid4().hex
        if self.cluster.enabled:
            if await self.cluster.claim_session(name, session_id, self.registry.by_name(name) is not None):
                await self.characters.reload(ch)
        saved, exact = self._saved_room(ch)
        room = await self._seat(session_id, saved, exact=exact, fallback=True)
        elsewhere = await self.cluster.ensure_room(room)
        if elsewhere is not None:
            await self.cluster.mark_in_transit(name, session_id, room if room != ch.room else "")
            # nothing was sent yet: the node it is sent to can say recovered: true to seq 0
            await self.cluster.store_replay(session_id, self._new_replay().export(time.monotonic()))
        if self._gone(link):
            if elsewhere is None:
                self._unseat(session_id, room)
            self._release_if_unused(name)
            return
        if elsewhere is not None:   # the character's room lives on another node: send the player there
            old = self.registry.by_name(name)
            if old is not None:
                self.replace(old)
            if link.session is not None:
                await self._drop_link_session(link)
            self._release_if_unused(name)
            link.send(self.cluster.redirect_body(session_id, name, elsewhere, rid))
            return
        if link.session is not None and link.session.name != name:
            await self._drop_link_session(link)
        old = self.registry.by_name(name)
        if old is not None:
            if old.link is link:   # the same socket logs in again: it stays open for the new session
                link.session = None
                old.link = None
            self.replace(old)
        session = Session(session_id, ch, self._new_replay())
        session.link = link
        link.session = session
        self.registry.add(session)
        self._count()
        event(log, "login", name=name, session=session.id)
        link.send(self._welcome(session, rid, tick_format))
        self._enter(session, room, room == ch.room, None)

    def _enter(self, session: Session, room: str, returning: bool, rid: int | None) -> None:
        """Queue the session's join of instance ``room`` (running here: ``ensure_room`` said so)."""
        runner = self.rooms.get(room)
        assert runner is not None and runner.running, room
        if room != room_kind(room) or self.rooms.types[room_kind(room)].max_players is not None:
            session.seats.add(room)
        try:
            session.submit(runner, "join", returning, rid)
        except Exception:
            self.rooms.release_seat(session, room)
            raise

    async def resume(self, link: Link, token: str, rid: int | None, tick_format: str | None = None,
                     seq: int | None = None) -> None:
        """``seq``: the last one the client received (None: protocol v1, nothing is replayed)."""
        claims = self.signer.verify(token, time.time())
        session = self.registry.get(claims.session)
        returning = True
        if session is None and self.cluster.enabled:   # registered on another node (or in transit)
            adopted = await self._adopt(link, claims.name, claims, rid)
            if adopted is None:
                return   # redirected onward
            session, returning = adopted
            self.registry.add(session)
            self._count()
            if self._gone(link):
                session.grace_task = asyncio.get_running_loop().create_task(self._grace(session))
                return
        if session is None or session.name != claims.name or session.ended:
            raise BadToken("session expired or unknown")
        if link.session is not None and link.session is not session:
            await self._drop_link_session(link)
        old_link = session.link
        if old_link is not None and old_link is not link:
            old_link.session = None
            old_link.bye("replaced")
        if session.grace_task is not None:
            session.grace_task.cancel()
            session.grace_task = None
        session.link = link
        link.session = session
        event(log, "resume", name=session.name, session=session.id, seq=seq)
        link.send(self._welcome(session, rid, tick_format, self._recover(session, seq)))
        try:
            await self._place_resumed(session, link, returning)
        except BaseException:
            if session.link is link:
                session.release()   # no joined is coming: what was held goes out now, before the error
            raise

    async def _place_resumed(self, session: Session, link: Link, returning: bool) -> None:
        """After the ``welcome`` of a resume: a fresh ``joined`` of the room the session is in, or a join of
        its saved room (here, or a hand-off to the node that runs it)."""
        if session.target is not None:
            session.submit(session.target, "snapshot")
            return
        ch = session.character
        saved, exact = self._saved_room(ch)
        room = await self._seat(session.id, saved, exact=exact, fallback=True)
        owner = await self.cluster.ensure_room(room)
        if session.ended or session.link is not link:
            self._unseat(session.id, room)
            return
        if owner is not None:
            await self.hand_off(session, room=room, target=owner, rid=None)
            return
        self._enter(session, room, returning and room == ch.room, None)

    def _new_replay(self) -> ReplayBuffer:
        return ReplayBuffer(self.replay_limits)

    def _recover(self, session: Session, seq: int | None) -> dict[str, Any]:
        """The ``welcome`` fields of a resume with ``seq`` (``recovered``, ``replay``: how many kept
        messages follow the ``joined``), holding the session's numbered messages until that ``joined``."""
        if seq is None:
            self.metrics.resumes.labels("v1").inc()
            return {}
        replay = session.replay
        kept = replay.since(seq, time.monotonic())
        if kept is None:
            event(log, "resume_unrecovered", name=session.name, session=session.id, seq=seq,
                  first=replay.first, last=replay.last, lost=replay.lost)
            replay.restart(seq)
            session.hold(replay.last)
            self.metrics.resumes.labels("unrecovered").inc()
            return {"recovered": False, "replay": 0}
        session.hold(seq)
        self.metrics.resumes.labels("recovered").inc()
        return {"recovered": True, "replay": len(kept)}

    def _restore(self, text: str | None) -> ReplayBuffer:
        """The replay buffer a hand-off left (None: its node died or never left one: history lost)."""
        if text is not None:
            try:
                return ReplayBuffer.restore(text, self.replay_limits, time.monotonic())
            except ValueError as exc:
                event(log, "replay_unreadable", level=logging.WARNING, error=str(exc))
        return ReplayBuffer(self.replay_limits, lost=True)

    async def _adopt(self, link: Link, name: str, claims: TokenClaims,
                     rid: int | None) -> tuple[Session, bool] | None:
        """Take over a session registered elsewhere. Returns (session, returning): returning is False when
        it enters its room at the spawn point (a redirected ``join``); None when ``link`` was redirected."""
        entry = await self.cluster.reclaim(claims)
        ch = await self.characters.adopt(name)
        wanted = self._home(entry.room or ch.room)
        try:
            room = await self._seat(claims.session, wanted, exact=INSTANCE_SEP in wanted, fallback=True)
            pending = bool(entry.room) or room != ch.room
            target = await self.cluster.ensure_room(room)
        except BaseException:
            self._release_if_unused(name)
            raise
        if target is not None:
            self._release_if_unused(name)
            link.send(self.cluster.redirect_body(claims.session, name, target, rid))
            return None
        if not await self.cluster.confirm_session(name, claims.session):
            self._release_if_unused(name)
            raise BadToken("session was replaced")
        if pending:
            ch.room = room
        replay = self._restore(await self.cluster.take_replay(claims.session))
        event(log, "adopted", node=self.cluster.node_id, name=name,
              session=claims.session, room=room, kept=len(replay), last=replay.last)
        session = Session(claims.session, ch, replay)
        return session, not pending

    # -- rooms ----------------------------------------------------------------------------------------
    async def join(self, session: Session, room: str, rid: int | None) -> None:
        """Route a ``join``: take a seat (join-or-create, or the exact instance ``NAME~n``), then queue the
        join here or hand the session to the node that runs that instance."""
        current = session.target or session.runner
        instance = await self._seat(session.id, room, exact=INSTANCE_SEP in room, current=current)
        try:
            owner = await self.cluster.ensure_room(instance)   # None: this node runs the instance
        except BaseException:
            if current is None or current.name != instance:
                self._unseat(session.id, instance)
            raise
        if session.ended:
            self._unseat(session.id, instance)
            return
        if owner is not None:
            await self.hand_off(session, room=instance, target=owner, rid=rid)
            return
        self._enter(session, instance, False, rid)

    # -- detach / grace / end -------------------------------------------------------------------------
    async def link_closed(self, link: Link) -> None:
        """The socket is gone: detach its session and start the grace period."""
        session = link.session
        link.session = None
        if session is None or session.link is not link:
            return
        session.link = None
        session.unhold()
        if self.stopping:
            return
        event(log, "detached", name=session.name, session=session.id,
              reason=link.close_reason or "closed")
        self.save_soon(session.character)
        session.grace_task = asyncio.get_running_loop().create_task(self._grace(session))

    async def _grace(self, session: Session) -> None:
        await asyncio.sleep(self.grace)
        session.grace_task = None
        if session.link is None and not session.ended:
            await self.end(session)

    async def _drop_link_session(self, link: Link) -> None:
        """A link that logs in again leaves its current session behind: end it now."""
        old = link.session
        if old is not None:
            link.session = None
            old.link = None
            await self.end(old)

    def _leave_rooms(self, session: Session, keep_seats: bool = False) -> None:
        """Out of every room of this node; seats are given back unless the session moves to another node
        (``keep_seats``: it comes back to the same instance there; unused seats expire)."""
        if session.grace_task is not None:
            session.grace_task.cancel()
            session.grace_task = None
        if session.runner is not None:
            session.runner.detach(session, keep_seat=keep_seats)
        session.forget_inputs()
        if keep_seats:
            session.seats.clear()
        for instance in list(session.seats):   # seats of joins that were queued, not applied
            self.rooms.release_seat(session, instance)

    def replace(self, old: Session) -> None:
        """End ``old`` because its character logged in again (its socket, if any, gets bye replaced)."""
        old.ended = True
        if old.link is not None:
            old.link.session = None
            old.link.bye("replaced")
            old.link = None
        self._leave_rooms(old)
        self.registry.remove(old)
        self._count()

    async def end(self, session: Session) -> None:
        """Session over: leave the room, forget the session, flush and release the character."""
        session.ended = True
        self._leave_rooms(session)
        self.registry.remove(session)
        self._count()
        event(log, "session_ended", name=session.name, session=session.id)
        await self.cluster.session_ended(session.name, session.id)
        await self.save(session.character)
        self._release_if_unused(session.name)

    async def hand_off(self, session: Session, *, room: str = "", target: NodeInfo | None = None,
                       rid: int | None = None, bye: str | None = None) -> None:
        """Move ``session`` off this node: detach, flush, mark in transit, then redirect or bye its socket."""
        link = session.link
        session.ended = True
        here = session.runner.name if session.runner is not None else ""
        self._leave_rooms(session, keep_seats=not room or room == here)   # back to the same instance
        self.registry.remove(session)
        self._count()
        if link is not None:
            link.session = None
            session.link = None
            if bye is not None:
                link.bye(bye)
        await self.cluster.mark_in_transit(session.name, session.id, room)
        await self.cluster.store_replay(session.id, session.replay.export(time.monotonic()))
        await self.save(session.character)
        self._release_if_unused(session.name)
        event(log, "handed_off", node=self.cluster.node_id, name=session.name, session=session.id,
              to=target.node if target else None, grace=self.grace)
        if link is not None and target is not None and bye is None:
            link.send(self.cluster.redirect_body(session.id, session.name, target, rid))

    async def stop(self) -> None:
        """Shutdown: every player leaves its room (sockets are already closed)."""
        self.stopping = True
        now = time.monotonic()
        for session in list(self.registry):
            if session.grace_task is not None:
                session.grace_task.cancel()
            if session.runner is not None:
                session.runner.detach(session)
            if self.cluster.enabled:   # resumable on another node: its messages go along
                with contextlib.suppress(Exception):
                    await self.cluster.store_replay(session.id, session.replay.export(now))

    # -- XP notices -------------------------------------------------------------------------------------
    def notify(self, name: str, body: dict[str, Any]) -> bool:
        """Send ``body`` to the character's session here (True); else an ``xp`` is forwarded to the node
        that has the session (False)."""
        session = self.registry.by_name(name)
        if session is not None:
            session.send(body)
            return True
        if body.get("t") == "xp":
            self.cluster.notify_xp(name, body)
        return False

    def current_room(self, name: str) -> RoomRunner | None:
        session = self.registry.by_name(name)
        return session.runner if session is not None else None

    # -- NodeEvents: what other nodes ask ---------------------------------------------------------------
    async def replace_session(self, session_id: str) -> None:
        old = self.registry.get(session_id)
        if old is not None:
            self.replace(old)
            await self.save(old.character)
            self._release_if_unused(old.name)

    async def hand_off_session(self, session_id: str) -> None:
        session = self.registry.get(session_id)
        if session is not None:
            await self.hand_off(session, bye="replaced")

    def deliver_xp(self, name: str, body: dict[str, Any]) -> None:
        session = self.registry.by_name(name)
        if session is not None:
            session.character.xp, session.character.level = int(body["xp"]), int(body["level"])
            session.send(body)

    async def room_lost(self, room: str, owner: NodeInfo | None) -> None:
        runner = self.rooms.get(room)
        sessions = {s for s in self.registry if s.runner is runner or s.target is runner}
        for session in sessions:
            await self.hand_off(session, room=room, target=owner, bye=None if owner else "shutdown")

    def live_sessions(self) -> list[tuple[str, str]]:
        return [(s.name, s.id) for s in self.registry]
