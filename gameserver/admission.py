"""Admission of new logins: refuse clearly and early instead of letting players time out.

Two gates, both answered with an ``error`` carrying ``retry_after`` (seconds), never with silence:

* ``Admission.check()`` when a login reaches the hashing (every login does: a new character is hashed,
  an existing one verified), and again when its turn for hashing comes: ``server_full`` while the server
  holds ``limits.max_sessions`` sessions, or while it is overloaded: the event loop thread used more than
  ``limits.max_loop_busy`` of the last second on the CPU, or the loop runs its timers late (the median
  tick lag of the last second, of the least late room, above ``limits.max_tick_lag``: the loop does not
  get the CPU it needs, e.g. other processes on the core). Once shut for overload the door opens again
  only after ``limits.overload_recover`` seconds of calm: loop busy at least 0.1 below its limit and the
  lag at most half of its limit (hysteresis: a door that flaps admits a burst of the waiting players, then
  chokes on it). Players already admitted keep playing; only arrivals are turned away. The session cap is
  soft by the logins already past their second check (hashing or storing the character: one or two at a
  time).
* ``LoginQueue`` in front of the secret hashing (``gameserver.auth.SecretHasher``): at most ``slots`` hash
  jobs run at once, the others wait in arrival order; when ``limits.login_queue`` logins already wait, or
  the expected wait is over ``limits.login_max_wait`` seconds, the new one gets ``busy`` with the
  expected drain time as ``retry_after``.

``Admission.status()`` feeds ``/health``: ``degraded`` while new players would get ``server_full``.
Refusals are counted in ``gameserver_logins_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .auth import SecretHasher
from .errors import Retry

if TYPE_CHECKING:
    from .config import ServerConfig
    from .metrics import Metrics

T = TypeVar("T")

MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 30.0


class Gate(Protocol):
    """What ``SecretHasher`` runs its jobs through (``LoginQueue``, ``Admission``)."""

    async def run(self, job: Callable[[], Awaitable[T]]) -> T: ...


class Refused(Retry):
    """A login turned away: ``code`` is ``busy`` or ``server_full``; come back in ``retry_after`` s
    (clamped to 1-30 s). Answered by the router like every ``Retry`` (``errors.wire_error``)."""

    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(code, message, round(min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, retry_after)), 1))


class LoginQueue:
    """At most ``slots`` jobs at once, the rest wait first come first served, within a bound.

    The expected wait is the number waiting times the recent job time divided by ``slots``; the job time
    is an exponential average of wall time per job, raised to the age of the oldest running job, so it
    grows as soon as the jobs are starved of CPU, not only after they finish.
    """

    def __init__(self, slots: int, max_waiting: int, max_wait: float, *,
                 clock: Callable[[], float] = time.monotonic, job_seconds: float = 0.005) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.clock = clock
        self.job_seconds = job_seconds
        self.busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._running: dict[int, float] = {}   # running job -> its start time
        self._ids = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def job_estimate(self) -> float:
        now = self.clock()
        return max([self.job_seconds, *(now - t for t in self._running.values())])

    def expected_wait(self) -> float:
        """Seconds a job arriving now would wait before it starts."""
        if self.busy < self.slots and not self._waiting:
            return 0.0
        return (len(self._waiting) + 1) * self.job_estimate() / self.slots

    async def run(self, job: Callable[[], Awaitable[T]], ready: Callable[[], None] | None = None) -> T:
        """Run ``job()`` when a slot is free, in arrival order; ``ready()`` is called first and may refuse.

        Raises ``Refused("busy")`` past the bound, or what ``ready`` raises (the slot passes on).
        """
        if self.busy >= self.slots or self._waiting:
            if len(self._waiting) >= self.max_waiting or self.expected_wait() > self.max_wait:
                drain = len(self._waiting) * self.job_estimate() / self.slots
                raise Refused("busy", "too many logins at once, retry later", drain)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()   # the slot was handed to us as we were cancelled: pass it on
                else:
                    self._waiting.remove(fut)
                raise
        else:
            self.busy += 1
        try:
            if ready is not None:
                ready()
        except BaseException:
            self._release()
            raise
        key = next(self._ids)
        start = self._running[key] = self.clock()
        try:
            return await job()
        finally:
            del self._running[key]
            self.job_seconds += 0.2 * ((self.clock() - start) - self.job_seconds)
            self._release()

    def _release(self) -> None:
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)   # the slot goes straight to the next in line
                return
        self.busy -= 1


class LoopLoad:
    """Share of wall time the event loop thread spent on the CPU over about the last ``window`` seconds.

    ``start()`` samples ``time.thread_time()`` (CPU time of the calling thread: the loop's) every 100 ms
    from a task on the loop; ``busy()`` compares the newest and oldest sample of the window.
    """

    def __init__(self, window: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.window = window
        self.clock = clock
        self.cpu = cpu
        self.samples: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Record one (wall, cpu) sample; keeps ``window`` seconds of them."""
        now = self.clock()
        self.samples.append((now, self.cpu()))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def busy(self) -> float:
        """0..1 (0 until two samples exist)."""
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def start(self) -> None:
        """Sample every 100 ms from the running loop (its thread is the one measured)."""
        async def run() -> None:
            while True:
                self.sample()
                await asyncio.sleep(0.1)

        self._task = asyncio.get_running_loop().create_task(run(), name="loop-load")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def loop_lag(windows: Iterable[Iterable[float]]) -> float:
    """How late the event loop runs its timers: the least late room's median tick lag over its recent
    window (0 without rooms or ticks).

    The median, not the max: one late tick (a GC pause) is not overload; half the ticks late is. The least
    late room, not the worst: rooms tick in the same phase, so the room served last waits for the others'
    tick work every period even on an idle loop; when the loop itself is late, every room is.
    """
    return min((statistics.median(w) for w in (list(w) for w in windows) if w), default=0.0)


class Admission:
    """Decides whether a new login may start; owns the login queue and the hasher behind it."""

    def __init__(self, config: ServerConfig, metrics: Metrics, sessions: Callable[[], int],
                 tick_lag: Callable[[], float], *, clock: Callable[[], float] = time.monotonic) -> None:
        limits = config.limits
        self.max_sessions = limits.max_sessions
        self.max_loop_busy = limits.max_loop_busy
        self.max_tick_lag = limits.max_tick_lag
        self.recover = limits.overload_recover
        self.full_retry_after = limits.full_retry_after
        self.metrics = metrics
        self.sessions = sessions
        self.tick_lag = tick_lag
        self.clock = clock
        auth = config.auth
        self.queue = LoginQueue(auth.hash_threads, limits.login_queue, limits.login_max_wait, clock=clock)
        self.hasher = SecretHasher(auth.hash_threads, auth.hash_nice, gate=self)
        self.load = LoopLoad(clock=clock)
        self._overloaded = False
        self._restless_at = -1.0   # last time the load was above the low marks
        self.last_lag = 0.0
        self.last_busy = 0.0
        self._refused = metrics.logins_refused

    def start(self) -> None:
        """Start measuring the loop's load (call on the running loop, before accepting players)."""
        self.load.start()

    def close(self) -> None:
        self.load.stop()
        self.hasher.close()

    def _full(self) -> str | None:
        """Why a new session would be refused now (None: welcome)."""
        now = self.clock()
        lag = self.last_lag = self.tick_lag()
        busy = self.last_busy = self.load.busy()
        if (0 < self.max_tick_lag < lag) or (0 < self.max_loop_busy < busy):
            self._overloaded = True
        if (self.max_tick_lag and lag > self.max_tick_lag / 2) or (
                self.max_loop_busy and busy > self.max_loop_busy - 0.1):
            self._restless_at = now
        if self._overloaded and now - self._restless_at < self.recover:
            return "server overloaded, retry later"
        self._overloaded = False
        if self.sessions() >= self.max_sessions:
            return "server full, retry later"
        return None

    def check(self) -> None:
        """Raises ``Refused("server_full")`` (counted) when no one new may come in."""
        reason = self._full()
        if reason is not None:
            self._refused.labels("server_full").inc()
            raise Refused("server_full", reason, self.full_retry_after)

    async def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """The hasher's gate, so every login passes here: check, queue ``job`` (the login's hash) in
        arrival order, and check again when its turn comes (a login that waited while the server filled
        up is refused instead of admitted). Refusals are counted and raised as ``Refused``."""
        self.check()
        try:
            return await self.queue.run(job, ready=self.check)
        except Refused as exc:
            if exc.code == "busy":
                self._refused.labels("busy").inc()
            raise

    def status(self) -> dict[str, Any]:
        """For ``/health``: ``degraded`` (with the reason) while new logins get ``server_full``."""
        reason = self._full()
        return {"state": "degraded" if reason else "ok", "reason": reason,
                "loop_busy": round(self.last_busy, 3), "median_tick_lag": round(self.last_lag * 1000, 3),
                "login_queue": self.queue.waiting, "hashing": self.queue.busy}
