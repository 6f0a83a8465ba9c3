"""XP grants: one background task per grant, never awaited by a tick.

Each grant gets one idempotency id (``new_grant_id``) that every retry reuses, so a grant whose first
attempt was stored but not acknowledged is not applied twice. Store errors are retried
``persist.grant_retries`` times with doubling backoff; a grant that still fails answers the hitter
``error internal``. ``xp`` goes to the hitter only after the store acknowledged the write; ``level_up`` goes
to the hitter's current room (or the granting room when the hitter is not in one here) when the level
rose. ``drain`` lets shutdown wait for grants in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .characters import GrantResult, new_grant_id
from .logs import event

if TYPE_CHECKING:
    from .characters import CharacterStore
    from .config import PersistConfig
    from .metrics import Metrics

log = logging.getLogger("gameserver.grants")


class Announcer(Protocol):
    """A room that can tell all its players something (``RoomRunner.announce``)."""

    def announce(self, body: dict[str, Any]) -> None: ...


class XpGrants:
    """Runs grants; ``notify(name, body)`` delivers ``xp``/errors to the character's session wherever it
    is; ``room_of(name)`` is the room the character is in on this node (for ``level_up``)."""

    def __init__(self, characters: CharacterStore, persist: PersistConfig, metrics: Metrics,
                 notify: Callable[[str, dict[str, Any]], Any],
                 room_of: Callable[[str], Announcer | None]) -> None:
        self.characters = characters
        self.persist = persist
        self.metrics = metrics
        self.notify = notify
        self.room_of = room_of
        self.tasks: set[asyncio.Task[GrantResult | None]] = set()

    def start(self, name: str, amount: int, reason: str, room: Announcer | None = None) -> None:
        """Grant in the background with a fresh grant id."""
        task = asyncio.get_running_loop().create_task(self.grant(name, amount, reason, new_grant_id(), room))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def grant(self, name: str, amount: int, reason: str, grant_id: str,
                    room: Announcer | None = None) -> GrantResult | None:
        """Store one grant (retrying store errors), then notify. Returns None when it finally failed."""
        cfg = self.persist
        result: GrantResult | None = None
        for attempt in range(cfg.grant_retries + 1):
            try:
                result = await self.characters.grant_xp(name, amount, grant_id)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event(log, "grant_attempt_failed", level=logging.WARNING, name=name, grant=grant_id,
                      attempt=attempt + 1, error=repr(exc))
                if attempt < cfg.grant_retries:
                    await asyncio.sleep(cfg.grant_backoff * (2 ** attempt))
        if result is None:
            self.metrics.grant_failures.inc()
            event(log, "grant_failed", level=logging.ERROR, name=name, grant=grant_id,
                  amount=amount)
            self.notify(name, {"t": "error", "code": "internal",
                               "message": f"could not store xp for {reason}, please report"})
            return None
        self.notify(name, {"t": "xp", "gained": amount, "xp": result.xp, "level": result.level,
                           "reason": reason})
        if result.level > result.old_level:
            target = self.room_of(name) or room
            if target is not None:
                target.announce({"t": "level_up", "name": name, "level": result.level})
            event(log, "level_up", name=name, level=result.level)
        return result

    async def drain(self, limit: float) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=limit)
