"""Client-side backoff after a refused login (``busy`` / ``server_full``): one rule for every client.

Used by ``GameClient.login``, the demo bots and the locust user, so a crowd of refused players spreads its
retries out instead of returning in one wave: wait ``retry_after`` times a random 1.0-1.5 when the server
sent one, else a capped exponential backoff with full jitter.
"""

from __future__ import annotations

import random

from .errors import ErrorCode

REFUSAL_CODES = frozenset({ErrorCode.BUSY.value, ErrorCode.SERVER_FULL.value})
MAX_BACKOFF = 30.0


def refusal_delay(code: str, retry_after: float | None, attempt: int,
                  rng: random.Random | None = None) -> float | None:
    """Seconds to wait before the next login after an ``error`` ``code``; None when ``code`` is no refusal.

    ``attempt`` counts the refusals so far (0 for the first).
    """
    if code not in REFUSAL_CODES:
        return None
    rng = rng or random
    if retry_after is not None and retry_after > 0:
        return min(MAX_BACKOFF, retry_after) * rng.uniform(1.0, 1.5)
    return min(MAX_BACKOFF, 0.5 * 2 ** min(attempt, 10)) * rng.uniform(0.5, 1.5)
