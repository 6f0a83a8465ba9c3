"""``GameServer``: wires store, registry, rooms and transport; owns session lifecycle and shutdown.

In-process use (tests, ``gameserver demo``)::

    server = GameServer(config)          # or GameServer(config, store=already_open_store)
    port = await server.start()          # binds (port 0 = any free port), rebuilds the leaderboard
    ...
    await server.stop()                  # bye shutdown to all, flush every character, close the store

Session lifecycle:
- login: verify/create the character, replace an older session of it (``bye replaced``), ``welcome``,
  then queue a join of the character's room (``joined`` follows at the next tick, without rid).
- socket drop: the session is detached (player stays in the room), its character is flushed at once,
  and it ends after ``auth.grace_seconds`` unless resumed; at the end the player leaves the room and the
  character is flushed again and forgotten.
- resume: a valid token of a session still registered takes it over (an open old socket gets ``bye
  replaced``): same session id, ``welcome``, then a fresh ``joined`` of the same room and place.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from .characters import Character, CharacterStore
from .cluster import Backend, ClusterNode
from .cluster.local import LocalRanking
from .config import ConfigError, ServerConfig
from .game.room import Room
from .game.world import spawn_point
from .grants import XpGrants
from .leaderboard import Leaderboard
from .logs import event
from .metrics import Metrics
from .registry import LocalSessionRegistry
from .roomrunner import RoomRunner
from .router import Router
from .session import Link, Session
from .tokens import BadToken, TokenSigner
from .transport import Transport

log = logging.getLogger("gameserver.app")


class GameServer:
    def __init__(self, config: ServerConfig, *, store: Any = None, cluster: Backend | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.leaderboard = Leaderboard()
        self.ranking: Any = LocalRanking(self.leaderboard)   # what ``top`` reads; shared when clustered
        self.registry = LocalSessionRegistry()
        self.cluster = ClusterNode(self, cluster)
        self.signer = TokenSigner(config.auth.token_secret, config.auth.token_ttl)
        self.router = Router(self)
        self.grants = XpGrants(self)
        self.transport = Transport(self)
        self.runners: dict[str, RoomRunner] = {}
        self.store = store
        self._own_store = store is None
        self.characters: CharacterStore
        self.port: int | None = None
        self.started_at = time.time()
        self.stopping = False
        self.ready = False   # set once start() has finished: rooms claimed, leaderboard loaded
        self._stopped = asyncio.Event()
        self._bg: set[asyncio.Task[Any]] = set()
        rules = config.rules()
        try:
            for spec in config.room_specs():
                runner = RoomRunner(Room(spec, rules), self, config.game.tick_rate,
                                    config.limits.room_input_queue, spawn_point(spec))
                self.runners[spec.name] = runner
        except ValueError as exc:
            raise ConfigError(f"invalid room configuration: {exc}") from None
        self._spawn = {name: r.spawn for name, r in self.runners.items()}

    # -- start / stop --------------------------------------------------------------------------------
    async def start(self) -> int:
        """Open the store, rebuild the leaderboard, start rooms and listen. Returns the bound port."""
        if self.store is None:
            from datastore import open_store
            self.store = await open_store(self.config.store.resolved_url())
        self.characters = CharacterStore(self.store, self.config, self.metrics, self.leaderboard, self._spawn)
        count = await self.characters.rebuild_leaderboard()
        if self.signer.ephemeral:
            event(log, "ephemeral_token_secret", level=logging.WARNING, setting="auth.token_secret")
        self.characters.start_flusher()
        self.port = await self.transport.start(self.config.host, self.config.port)
        await self.cluster.start(self.port)   # alone: owns and starts every room; clustered: rooms on demand
        shared = self.cluster.backend.ranking if self.cluster.backend is not None else None
        if shared is not None:
            self.ranking = self.characters.shared_ranking = shared
            await shared.record_many(self.characters.leaderboard_entries())
        self.ready = True
        event(log, "started", host=self.config.host, port=self.port, rooms=list(self.runners),
              characters=count, tick_rate=self.config.game.tick_rate)
        return self.port

    async def stop(self, grace: float = 10.0) -> None:
        """Graceful stop: stop accepting, ``bye shutdown`` to all, wait for sockets, persist, close store."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        event(log, "stopping", sessions=len(self.registry))
        self.transport.stop_accepting()
        for link in list(self.transport.links):
            link.bye("shutdown")
        await self.transport.wait_closed(min(grace, self.config.limits.close_timeout + 1.0))
        for runner in self.runners.values():
            await runner.stop()
        await self.grants.drain(grace / 2)
        for session in list(self.registry):
            if session.grace_task is not None:
                session.grace_task.cancel()
            if session.runner is not None:
                session.runner.detach(session)
        if self._bg:
            await asyncio.wait(list(self._bg), timeout=grace / 2)
        await self.characters.stop_flusher()
        await self.characters.flush_all()
        await self.cluster.stop()
        if self._own_store:
            await self.store.close()
        event(log, "stopped")
        self._stopped.set()

    # -- health --------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        lag = max((r.lag_max() for r in self.runners.values()), default=0.0)
        return {
            "status": "stopping" if self.stopping else "ok" if self.ready else "starting",
            "sessions": len(self.registry),
            "connections": len(self.transport.links),
            "rooms": {name: len(r.by_pid) for name, r in self.runners.items()},
            "tick_lag": round(lag * 1000, 3),
            "tick_rate": self.config.game.tick_rate,
            "overruns": sum(r.overruns for r in self.runners.values()),
            "uptime": round(time.time() - self.started_at, 3),
        }

    # -- session lifecycle ---------------------------------------------------------------------------
    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def save_soon(self, ch: Character) -> None:
        """Flush one character in the background (leave, disconnect)."""
        self._spawn_task(self._save(ch))

    async def _save(self, ch: Character) -> None:
        try:
            await self.characters.flush(ch)
        except Exception as exc:
            event(log, "flush_failed", level=logging.WARNING, name=ch.name, error=repr(exc))

    def _welcome(self, session: Session, rid: int | None) -> dict[str, Any]:
        body = {"t": "welcome", "session": session.id,
                "token": self.signer.issue(session.id, session.name, time.time()),
                "character": session.character.wire(), "tick_rate": float(self.config.game.tick_rate),
                "protocol": 1}
        if rid is not None:
            body["rid"] = rid
        return body

    def _replace(self, old: Session) -> None:
        """End ``old`` because its character logged in again (its socket, if any, gets bye replaced)."""
        old.ended = True
        if old.link is not None:
            old.link.session = None
            old.link.bye("replaced")
            old.link = None
        if old.grace_task is not None:
            old.grace_task.cancel()
        if old.runner is not None:
            old.runner.detach(old)
        old.target = None
        self.registry.remove(old)

    async def _drop_link_session(self, link: Link) -> None:
        """A link that logs in again leaves its current session behind: end it now."""
        old = link.session
        if old is not None:
            link.session = None
            old.link = None
            await self._end(old)

    async def login(self, link: Link, name: str, secret: str, rid: int | None) -> None:
        ch = await self.characters.login(name, secret)
        session_id = uuid.uuid4().hex
        elsewhere = await self.cluster.claim_login(name, session_id, ch)   # None: the room is ours
        if link.closing or not link.sink.is_open or self.stopping:
            if self.registry.by_name(name) is None:
                self.characters.release(name)
            return
        if elsewhere is not None:   # the character's room lives on another node: send the player there
            old = self.registry.by_name(name)
            if old is not None:
                self._replace(old)
            if link.session is not None:
                await self._drop_link_session(link)
            if self.registry.by_name(name) is None:
                self.characters.release(name)
            self.cluster.send_redirect(link, session_id, name, elsewhere, rid)
            return
        if link.session is not None and link.session.name != name:
            await self._drop_link_session(link)
        old = self.registry.by_name(name)
        if old is not None:
            if old.link is link:
                link.session = None
            self._replace(old)
        session = Session(session_id, ch)
        session.link = link
        link.session = session
        self.registry.add(session)
        self.metrics.sessions.set(len(self.registry))
        event(log, "login", name=name, session=session.id)
        link.send(self._welcome(session, rid))
        runner = self.runners[ch.room]
        session.submit(runner, "join", (ch.x, ch.y), None)

    async def resume(self, link: Link, token: str, rid: int | None) -> None:
        claims = self.signer.verify(token, time.time())
        session = self.registry.get(claims.session)
        at_spawn = False
        if session is None and self.cluster.enabled:   # registered on another node (or in transit)
            adopted = await self.cluster.adopt(link, claims, rid)
            if adopted is None:
                return   # redirected onward
            session, at_spawn = adopted
            self.registry.add(session)
            self.metrics.sessions.set(len(self.registry))
            if link.closing or not link.sink.is_open or self.stopping:
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
        event(log, "resume", name=session.name, session=session.id)
        link.send(self._welcome(session, rid))
        if session.target is not None:
            session.submit(session.target, "snapshot")
        else:
            runner = self.runners[session.character.room]
            at = None if at_spawn else (session.character.x, session.character.y)
            session.submit(runner, "join", at, None)

    async def link_closed(self, link: Link) -> None:
        """The socket is gone: detach its session and start the grace period."""
        session = link.session
        link.session = None
        if session is None or session.link is not link:
            return
        session.link = None
        if self.stopping:
            return
        event(log, "detached", name=session.name, session=session.id, reason=link.close_reason or "closed")
        self.save_soon(session.character)
        session.grace_task = asyncio.get_running_loop().create_task(self._grace(session))

    async def _grace(self, session: Session) -> None:
        await asyncio.sleep(self.config.auth.grace_seconds)
        session.grace_task = None
        if session.link is None and not session.ended:
            await self._end(session)

    async def _end(self, session: Session) -> None:
        """Session over: leave the room, forget the session, flush and release the character."""
        session.ended = True
        if session.runner is not None:
            session.runner.detach(session)
        session.target = None
        self.registry.remove(session)
        self.metrics.sessions.set(len(self.registry))
        event(log, "session_ended", name=session.name, session=session.id)
        await self.cluster.session_ended(session)
        await self._save(session.character)
        if self.registry.by_name(session.name) is None:
            self.characters.release(session.name)

    # -- test / admin hooks --------------------------------------------------------------------------
    async def grant_xp(self, name: str, amount: int, grant_id: str) -> Any:
        """Apply one XP grant by id (idempotent) and notify like a kill would; for tests and admin tools."""
        return await self.grants.grant(name, amount, "admin", grant_id)
