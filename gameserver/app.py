"""``GameServer``: the composition root. It builds every part, wires them with narrow callables, and owns
start-up and graceful shutdown; no other module gets this object.

In-process use (tests, ``gameserver demo``)::

    server = GameServer(config)          # or GameServer(config, store=already_open_store)
    port = await server.start()          # binds (port 0 = any free port), rebuilds the leaderboard
    ...
    await server.stop()                  # bye shutdown to all, flush every character, close the store

The parts: ``RoomHost`` (room types -> runners), ``SessionManager`` (session lifecycle), ``ClusterNode``
(leases, directory, other nodes), ``Router`` (frames -> handlers), ``Transport`` (websockets + HTTP),
``XpGrants``, ``CharacterStore``, ``WebUI``, ``Metrics``. Session lifecycle is documented in
``gameserver.sessions``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from .characters import CharacterStore, GrantResult
from .cluster import Backend, ClusterNode
from .cluster.local import LocalRanking
from .config import ServerConfig
from .grants import XpGrants
from .leaderboard import Leaderboard
from .logs import event
from .metrics import Metrics
from .registry import LocalSessionRegistry
from .rooms.host import RoomHost
from .rooms.registry import room_types
from .rooms.runner import RoomRunner
from .router import Router
from .session import Session
from .sessions import SessionManager
from .tokens import TokenSigner
from .transport import Transport
from .webui import StatsSource, WebUI

log = logging.getLogger("gameserver.app")


class GameServer:
    def __init__(self, config: ServerConfig, *, store: Any = None, cluster: Backend | None = None,
                 config_path: str | None = None) -> None:
        """Build every part (room types are imported and each room's ``on_create`` runs here: a bad room is
        a ``ConfigError`` now, not at the first join). ``config_path``: the config file, whose directory
        room type modules are also imported from."""
        self.config = config
        self.metrics = Metrics()
        self.leaderboard = Leaderboard()
        self.ranking: Any = LocalRanking(self.leaderboard)   # what ``top`` reads; shared when clustered
        self.registry = LocalSessionRegistry()
        self.signer = TokenSigner(config.auth.token_secret, config.auth.token_ttl)
        self.store = store
        self._own_store = store is None
        self.port: int | None = None
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self.stopping = False
        self.ready = False   # set once start() has finished: rooms claimed, leaderboard loaded
        self._stopped = asyncio.Event()
        self._bg: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

        search = [str(Path(config_path).resolve().parent)] if config_path else []
        events = _RoomEvents()
        self.rooms = RoomHost(room_types(config, search), events, self.metrics,
                              max_inputs=config.limits.room_input_queue)
        self.runners = self.rooms.runners
        self.characters = CharacterStore(store, config, self.metrics, self.leaderboard,
                                         self.rooms.spawn_points())
        self.cluster = ClusterNode(config.cluster, self.rooms, self.signer, host=config.host,
                                   grace=config.auth.grace_seconds, backend=cluster)
        self.sessions = SessionManager(config, self.characters, self.registry, self.signer, self.rooms,
                                       self.cluster, self.metrics, self._spawn_task)
        self.cluster.bind(self.sessions)
        self.grants = XpGrants(self.characters, config.persist, self.metrics, self.sessions.notify,
                               self.sessions.current_room)
        events.grants, events.sessions, events.rooms = self.grants, self.sessions, self.rooms
        self.router = Router(self.sessions, self.rooms, self.metrics, config.limits,
                             top=lambda n: self.ranking.top(n), refresh=self._refresh)
        stats = StatsSource(self.metrics.registry, self._started_mono, self._room_stats,
                            lambda: len(self.registry))
        self.transport = Transport(config.limits, self.metrics, receive=self.router.receive,
                                   closed=self.sessions.link_closed, health=self.health,
                                   pages=WebUI(stats, config.admin_token, config.static_dir))

    # -- start / stop --------------------------------------------------------------------------------
    async def start(self) -> int:
        """Open the store, rebuild the leaderboard, start rooms and listen. Returns the bound port."""
        if self.store is None:
            from datastore import open_store
            self.store = await open_store(self.config.store.resolved_url())
        self.characters.store = self.store
        count = await self.characters.rebuild_leaderboard()
        if self.signer.ephemeral:
            event(log, "ephemeral_token_secret", level=logging.WARNING, setting="auth.token_secret")
        self.characters.start_flusher()
        self.port = await self.transport.start(self.config.host, self.config.port)
        await self.cluster.start(self.port)   # alone: owns and starts every room; clustered: rooms on demand
        assert self.cluster.backend is not None
        self.rooms.seats = self.cluster.backend.seats
        self.rooms.seat_ttl = self.cluster.seat_ttl
        self.rooms.spawn = self._spawn_task
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_rooms())
        shared = self.cluster.backend.ranking if self.cluster.backend is not None else None
        if shared is not None:
            self.ranking = self.characters.shared_ranking = shared
            await shared.record_many(self.characters.leaderboard_entries())
        self.ready = True
        event(log, "started", host=self.config.host, port=self.port, rooms=list(self.rooms),
              characters=count, tick_rate=self.config.game.tick_rate)
        return self.port

    async def stop(self, grace: float = 10.0) -> None:
        """Graceful stop: stop accepting, ``bye shutdown`` to all, wait for sockets, persist, close store."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        grace_ends = time.monotonic() + grace
        self.sessions.stopping = True
        event(log, "stopping", sessions=len(self.registry))
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.transport.stop_accepting()
        for link in list(self.transport.links):
            link.bye("shutdown")
        await self.transport.wait_closed(min(grace, self.config.limits.close_timeout + 1.0))
        await self.rooms.stop_all()
        await self.grants.drain(grace_ends - time.monotonic())   # waiting grants retry until the grace ends
        await self.sessions.stop()
        self.rooms.dispose_all()
        if self._bg:
            await asyncio.wait(list(self._bg), timeout=grace / 2)
        await self.characters.stop_flusher()
        await self.characters.flush_all()
        await self.cluster.stop()
        if self._own_store and self.store is not None:
            await self.store.close()
        event(log, "stopped")
        self._stopped.set()

    # -- health and stats ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``/health`` (a readiness probe: HTTP 200 only for ``ok``; docs/reliability.md)."""
        lag = max((r.lag_max() for r in self.runners.values()), default=0.0)
        store = self.characters.health.report()   # degraded: grants/flushes wait for the datastore
        return {
            "status": "stopping" if self.stopping else "starting" if not self.ready else
                      "degraded" if store["state"] != "ok" else "ok",
            "store": store,
            "sessions": len(self.registry),
            "connections": len(self.transport.links),
            "rooms": {name: len(r.members) for name, r in self.runners.items()},
            "instances": {kind: sum(r.kind == kind for r in self.runners.values()) for kind in self.rooms},
            "tick_lag": round(lag * 1000, 3),
            "tick_rate": self.config.game.tick_rate,
            "overruns": sum(r.overruns for r in self.runners.values()),
            "uptime": round(time.time() - self.started_at, 3),
        }

    async def _sweep_rooms(self) -> None:
        """Seats refreshed, idle instances disposed (``RoomHost.sweep``), once a second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.rooms.sweep(self.cluster.owned, self.cluster.give_up)
            except Exception as exc:   # the store of seats may be down for a moment: next second
                event(log, "room_sweep_failed", level=logging.WARNING, error=repr(exc))

    def _room_stats(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, runner.stats()) for name, runner in self.runners.items()]

    async def _refresh(self, ch: Any) -> None:
        """Before answering ``me``: XP may have been granted by another node."""
        if self.cluster.enabled:
            await self.characters.refresh_xp(ch)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # -- test / admin hooks --------------------------------------------------------------------------
    async def grant_xp(self, name: str, amount: int, grant_id: str) -> GrantResult | None:
        """Apply one XP grant by id (idempotent) and notify like a kill would; for tests and admin tools."""
        return await self.grants.grant(name, amount, "admin", grant_id)


class _RoomEvents:
    """What room runners tell the rest of the server (``gameserver.rooms.runner.RoomEvents``)."""

    grants: XpGrants
    sessions: SessionManager
    rooms: RoomHost

    def grant_xp(self, name: str, amount: int, reason: str, runner: RoomRunner) -> None:
        self.grants.start(name, amount, reason, runner)

    def player_left(self, session: Session) -> None:
        self.sessions.save_soon(session.character)

    def seat_freed(self, session: Session, runner: RoomRunner) -> None:
        self.rooms.release_seat(session, runner.name)
