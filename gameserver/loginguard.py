"""Throttle of failed logins per character name (pure: no I/O, time passed in).

Like Nakama's account lockout: ``failures`` wrong secrets for one name within ``window`` seconds lock that
name for ``window`` seconds from the failure that reached the limit. While locked, ``login`` for the name
answers ``error rate_limited`` with ``retry_after`` (seconds) *before* any secret hash is computed, so a
guesser costs the server nothing; a login with the right secret after the lock works, and a successful
login forgets the name's failures. Failures older than ``window`` do not count.

Memory is bounded: at most ``max_names`` names are tracked, in least-recently-failed order. Entries whose
window has passed are dropped as new failures arrive; when the table is still full, the name whose last
failure is oldest is forgotten (its count starts again from zero). Forgetting a locked name that way takes
``max_names`` fresh failing names inside one window, each of which paid for its own hash.

The guard is per server process: on a cluster each node counts on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .errors import Retry


class LoginThrottled(Retry):
    """Refused without checking the secret: too many recent failures for this name."""

    def __init__(self, retry_after: float) -> None:
        message = f"too many failed logins for this name, retry in {retry_after:.1f} s"
        super().__init__("rate_limited", message, retry_after)


@dataclass
class _Entry:
    first: float          # start of the counting window: the oldest failure that still counts
    last: float           # latest failure (keeps the table ordered for expiry)
    count: int
    locked_until: float   # 0.0 while not locked


class LoginGuard:
    """Counts wrong secrets per name; ``retry_after`` says whether a login may be tried now."""

    def __init__(self, failures: int = 5, window: float = 60.0, max_names: int = 10_000) -> None:
        if failures < 1 or window <= 0 or max_names < 1:
            raise ValueError("need failures >= 1, window > 0 and max_names >= 1")
        self.failures = failures
        self.window = window
        self.max_names = max_names
        self._names: OrderedDict[str, _Entry] = OrderedDict()   # least recently failed first

    def __len__(self) -> int:
        return len(self._names)

    def retry_after(self, name: str, now: float) -> float | None:
        """Seconds until ``name`` may try again, or None when a login may be tried now (call first)."""
        entry = self._names.get(name)
        if entry is None or entry.locked_until <= now:
            return None
        return entry.locked_until - now

    def failed(self, name: str, now: float) -> None:
        """Record a wrong secret for ``name`` at ``now``; the ``failures``-th within a window locks it."""
        self._expire(now)
        entry = self._names.pop(name, None)
        if entry is None or now - entry.first >= self.window or 0.0 < entry.locked_until <= now:
            entry = _Entry(first=now, last=now, count=0, locked_until=0.0)   # a fresh window
        entry.count += 1
        entry.last = now
        if entry.count >= self.failures:
            entry.locked_until = now + self.window
        self._names[name] = entry   # now the most recently failed
        while len(self._names) > self.max_names:
            self._names.popitem(last=False)

    def succeeded(self, name: str) -> None:
        """A login of ``name`` with the right secret: forget its failures."""
        self._names.pop(name, None)

    def _expire(self, now: float) -> None:
        """Drop names whose last failure is a window old: neither counting nor locked any more."""
        while self._names:
            entry = next(iter(self._names.values()))
            if now - entry.last < self.window:
                return
            self._names.popitem(last=False)
