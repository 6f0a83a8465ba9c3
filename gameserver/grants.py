"""XP grants after a kill: one task per hitter, never awaited by the tick.

Each grant gets one idempotency id (``new_grant_id``) that every retry reuses, so a grant whose first
attempt was stored but not acknowledged is not applied twice. Store errors are retried
``persist.grant_retries`` times with doubling backoff; a grant that still fails answers the hitter
``error internal``. ``xp`` goes to the hitter only after the store acknowledged the write; ``level_up`` goes
to the hitter's current room (or the kill's room when the hitter is offline) when the level rose.
``drain`` lets shutdown wait for grants in flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .characters import GrantResult, new_grant_id
from .logs import event

if TYPE_CHECKING:
    from .app import GameServer
    from .roomrunner import RoomRunner

log = logging.getLogger("gameserver.grants")


class XpGrants:
    def __init__(self, server: GameServer) -> None:
        self.server = server
        self.tasks: set[asyncio.Task[GrantResult | None]] = set()

    def start(self, hitters: tuple[str, ...], amount: int, reason: str, room: RoomRunner) -> None:
        loop = asyncio.get_running_loop()
        for name in hitters:
            task = loop.create_task(self.grant(name, amount, reason, new_grant_id(), room))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def grant(self, name: str, amount: int, reason: str, grant_id: str,
                    room: RoomRunner | None = None) -> GrantResult | None:
        """Store one grant (retrying store errors), then notify. Returns None when it finally failed."""
        cfg = self.server.config.persist
        server = self.server
        result: GrantResult | None = None
        for attempt in range(cfg.grant_retries + 1):
            try:
                result = await server.characters.grant_xp(name, amount, grant_id)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event(log, "grant_attempt_failed", level=logging.WARNING, name=name, grant=grant_id,
                      attempt=attempt + 1, error=repr(exc))
                if attempt < cfg.grant_retries:
                    await asyncio.sleep(cfg.grant_backoff * (2 ** attempt))
        session = server.registry.by_name(name)
        if result is None:
            server.metrics.grant_failures.inc()
            event(log, "grant_failed", level=logging.ERROR, name=name, grant=grant_id, amount=amount)
            if session is not None:
                session.send({"t": "error", "code": "internal",
                              "message": f"could not store xp for {reason}, please report"})
            return None
        body = {"t": "xp", "gained": amount, "xp": result.xp, "level": result.level, "reason": reason}
        if session is not None:
            session.send(body)
        else:   # the hitter moved to another node since the kill
            server.cluster.notify_xp(name, body)
        if result.level > result.old_level:
            target = session.runner if session is not None and session.runner is not None else room
            if target is not None:
                target.broadcast_reliable({"t": "level_up", "name": name, "level": result.level})
            event(log, "level_up", name=name, level=result.level)
        return result

    async def drain(self, limit: float) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=limit)
