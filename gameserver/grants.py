"""XP grants: one background task per grant, never awaited by a tick, retried until the store answers.

Each grant gets one idempotency id (``new_grant_id``) that every try reuses, so a grant whose try was
stored but not acknowledged (an error ``in_doubt``: the connection broke after the write was sent, the
Redis replicas did not confirm it) is not applied twice: the retry finds the id in the record, and the
store confirms that record (``Store.confirm_read``) before the grant counts as done.

Retry policy (``RetryPolicy``, from ``[persist]``): an error that means "never" (``storehealth.final``: a
record too big, a bad bin or key, a closed store; or ``UnknownCharacter``) ends the grant at once; every
other error is retried with capped, jittered exponential backoff (``grant_backoff`` doubling up to
``grant_backoff_max``, each delay drawn from half of it to all of it) for ``grant_retry_for`` seconds
(default 30: outlasts a Redis failover and a short restart), the last try at the end of that window. A
grant that ends unstored answers the hitter ``error internal`` and is logged with character and grant id.
Waiting grants live in memory only (``grant_pending_max`` at once; beyond it a grant fails at once).

``xp`` goes to the hitter only after the store acknowledged the write; ``level_up`` goes to the hitter's
current room (or the granting room when the hitter is not in one here) when the level rose. ``drain``
lets shutdown retry the grants still waiting until its grace ends and logs the ones it had to abandon.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .characters import GrantResult, UnknownCharacter, new_grant_id
from .logs import event
from .storehealth import final

if TYPE_CHECKING:
    from .characters import CharacterStore
    from .config import PersistConfig
    from .metrics import Metrics

log = logging.getLogger("gameserver.grants")


class Announcer(Protocol):
    """A room that can tell all its players something (``RoomRunner.announce``)."""

    def announce(self, body: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a grant is retried: pure, so tests check it without a store or a clock."""

    first: float      # delay before the first retry (before jitter)
    cap: float        # no delay is longer
    window: float     # seconds after the first try in which retries may start

    @classmethod
    def from_config(cls, persist: PersistConfig) -> RetryPolicy:
        return cls(persist.grant_backoff, persist.grant_backoff_max, persist.grant_retry_for)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number ``retry`` (0 = the first): ``first * 2**retry`` capped at ``cap``,
        then drawn uniformly from half of it to all of it, so grants failed together do not retry in
        lockstep and none hammers the store faster than half the cap once the cap is reached."""
        top = min(self.cap, self.first * 2.0 ** min(retry, 64))
        return rng.uniform(top / 2, top)

    def next_delay(self, retry: int, elapsed: float, rng: random.Random) -> float | None:
        """Wait before the next try, ``elapsed`` seconds after the first one; None: the window is over,
        give up. The delay is cut so that the last try is made at the end of the window."""
        left = self.window - elapsed
        if left <= 0:
            return None
        return min(self.backoff(retry, rng), left)


def ends_at_once(exc: BaseException) -> bool:
    """True for errors after which no retry of a grant can succeed (see the module docstring)."""
    return isinstance(exc, UnknownCharacter) or final(exc)


@dataclass
class PendingGrant:
    """A grant not yet stored (first try in flight, or waiting to retry)."""

    name: str
    grant_id: str
    amount: int
    reason: str
    started: float            # time.monotonic() of the first try
    tries: int = 0
    error: str = ""           # the last try's error


class XpGrants:
    """Runs grants; ``notify(name, body)`` delivers ``xp``/errors to the character's session wherever it
    is; ``room_of(name)`` is the room the character is in on this node (for ``level_up``). ``rng`` draws
    the jitter (seeded in tests)."""

    def __init__(self, characters: CharacterStore, persist: PersistConfig, metrics: Metrics,
                 notify: Callable[[str, dict[str, Any]], Any],
                 room_of: Callable[[str], Announcer | None], *, rng: random.Random | None = None) -> None:
        self.characters = characters
        self.persist = persist
        self.policy = RetryPolicy.from_config(persist)
        self.metrics = metrics
        self.notify = notify
        self.room_of = room_of
        self.rng = rng or random.Random()
        self.health = characters.health
        self.pending: dict[str, PendingGrant] = {}      # grant id -> grant not stored yet
        self.tasks: dict[asyncio.Task[GrantResult | None], str] = {}   # background grant -> its id
        metrics.grants_pending.set_function(lambda: len(self.pending))

    def start(self, name: str, amount: int, reason: str, room: Announcer | None = None) -> None:
        """Grant in the background with a fresh grant id (called from a tick: never blocks)."""
        pending = PendingGrant(name, new_grant_id(), amount, reason, time.monotonic())
        if len(self.pending) >= self.persist.grant_pending_max:
            self._failed(pending, "overflow")
            return
        self.pending[pending.grant_id] = pending   # counted now: the task runs at the loop's next turn
        task = asyncio.get_running_loop().create_task(self._run(pending, room))
        self.tasks[task] = pending.grant_id
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.tasks.pop(task, None)

    async def grant(self, name: str, amount: int, reason: str, grant_id: str,
                    room: Announcer | None = None) -> GrantResult | None:
        """Store one grant by id (retrying per the policy), then notify; awaited by admin tools and tests.
        Returns None when it finally failed."""
        pending = self.pending[grant_id] = PendingGrant(name, grant_id, amount, reason, time.monotonic())
        return await self._run(pending, room)

    async def _run(self, p: PendingGrant, room: Announcer | None) -> GrantResult | None:
        self.metrics.grants.inc()
        try:
            result = await self._store(p)
        finally:
            self.pending.pop(p.grant_id, None)
            self.health.succeeded(f"grant:{p.grant_id}")
        if result is None:
            return None
        self.notify(p.name, {"t": "xp", "gained": p.amount, "xp": result.xp, "level": result.level,
                             "reason": p.reason})
        if result.level > result.old_level:
            target = self.room_of(p.name) or room
            if target is not None:
                target.announce({"t": "level_up", "name": p.name, "level": result.level})
            event(log, "level_up", name=p.name, level=result.level)
        return result

    async def _store(self, p: PendingGrant) -> GrantResult | None:
        work = f"grant:{p.grant_id}"
        retry = 0
        while True:
            p.tries += 1
            try:
                result = await self.characters.grant_xp(p.name, p.amount, p.grant_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                p.error = f"{type(exc).__name__}: {exc}"
                self.health.failed(work, exc)
                if ends_at_once(exc):
                    self._failed(p, "final")
                    return None
                delay = self.policy.next_delay(retry, time.monotonic() - p.started, self.rng)
                if delay is None:
                    self._failed(p, "gave_up")
                    return None
                doubt = bool(getattr(exc, "in_doubt", False))
                self.metrics.grant_retries.labels("in_doubt" if doubt else "failed").inc()
                # one warning per grant, not one per try: an outage would otherwise log ~30 lines a grant
                event(log, "grant_retrying", level=logging.WARNING if retry == 0 else logging.DEBUG,
                      say="XP grant not stored yet: retrying with the same grant id.", name=p.name,
                      grant=p.grant_id, tries=p.tries, in_doubt=doubt, retry_in=round(delay, 3),
                      error=p.error)
                retry += 1
                await asyncio.sleep(delay)
            else:
                if p.tries > 1:
                    event(log, "grant_stored_after_retry", name=p.name, grant=p.grant_id, tries=p.tries,
                          waited=round(time.monotonic() - p.started, 3), applied=result.applied)
                return result

    def _failed(self, p: PendingGrant, why: str) -> None:
        """A grant that will not be stored: count, log with character and grant id, tell the hitter."""
        self.metrics.grant_failures.labels(why).inc()
        event(log, "grant_failed", level=logging.ERROR, say=f"XP grant not stored ({why}).", name=p.name,
              grant=p.grant_id, amount=p.amount, reason=p.reason, tries=p.tries,
              waited=round(time.monotonic() - p.started, 3), error=p.error)
        self.notify(p.name, {"t": "error", "code": "internal",
                             "message": f"could not store xp for {p.reason}, please report"})

    async def drain(self, limit: float) -> int:
        """At shutdown (no new grants any more): let waiting grants keep retrying for up to ``limit``
        seconds, then cancel the rest and log each (character, grant id) as not acknowledged. Returns how
        many were abandoned (each may or may not have been stored: the grant id keeps it single)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, limit))
        left = [t for t in self.tasks if not t.done()]
        abandoned = [self.pending[gid] for t in left if (gid := self.tasks[t]) in self.pending]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        for p in abandoned:
            self.metrics.grant_failures.labels("shutdown").inc()
            event(log, "grant_abandoned", level=logging.ERROR,
                  say="XP grant not acknowledged before the shutdown grace ended.", name=p.name,
                  grant=p.grant_id, amount=p.amount, reason=p.reason, tries=p.tries,
                  waited=round(time.monotonic() - p.started, 3), error=p.error)
        return len(abandoned)
