"""Per-session token bucket with flood detection.

``check(now)`` says what to do with one incoming message:
- ``ALLOW``: handle it;
- ``DROP_NOTIFY``: drop it and answer ``error rate_limited`` (at most once per ``notify_every`` seconds);
- ``DROP``: drop it silently;
- ``KICK``: the session has been over the rate continuously for ``kick_after`` seconds: ``bye rate_limited``.

"Continuously over the rate" means drops keep happening with gaps shorter than one second; one second
without a drop ends the flood.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    ALLOW = 0
    DROP = 1
    DROP_NOTIFY = 2
    KICK = 3


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float, *, kick_after: float = 3.0,
                 notify_every: float = 1.0) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now
        self.kick_after = kick_after
        self.notify_every = notify_every
        self.flood_since: float | None = None
        self.last_drop = -1e18
        self.last_notify = -1e18

    def check(self, now: float) -> Verdict:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.flood_since is not None and now - self.last_drop >= 1.0:
            self.flood_since = None
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Verdict.ALLOW
        self.last_drop = now
        if self.flood_since is None:
            self.flood_since = now
        elif now - self.flood_since >= self.kick_after:
            return Verdict.KICK
        if now - self.last_notify >= self.notify_every:
            self.last_notify = now
            return Verdict.DROP_NOTIFY
        return Verdict.DROP
