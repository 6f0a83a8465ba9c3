"""Whether work of this server is waiting for an unavailable datastore: ``/health``'s ``degraded``.

Detection is by the writes the server has to make anyway, no probe traffic: an XP grant whose last try
failed with a storage error (and that is still retrying), or a character whose last write-behind flush
failed with one (retried every ``persist.flush_interval``), makes the store ``degraded`` until that piece
of work succeeds, gives up, or is forgotten (session ended). So the state clears by itself as soon as the
store answers again, and a server with nothing to write does not notice an outage until it has something
to write (a kill, a move): then within one try.

Errors are sorted in one place here: ``final(exc)`` (retrying cannot help: a record too big, a bad bin or
key, a closed store, a corrupt log) and ``unavailable(exc)`` (the storage under the store failed: disk
fault, Redis unreachable, replicas did not confirm; the same call may succeed later).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from datastore import (
    CorruptLogError,
    InvalidBinError,
    InvalidKeyError,
    InvalidURLError,
    RecordTooBigError,
    StorageError,
    StoreClosedError,
)

# Errors that mean "never": the same write fails the same way however often it is retried.
FINAL_ERRORS: tuple[type[BaseException], ...] = (
    RecordTooBigError, InvalidBinError, InvalidKeyError, InvalidURLError, StoreClosedError, CorruptLogError,
)


def final(exc: BaseException) -> bool:
    """True when retrying the call that raised ``exc`` cannot succeed (callers give up at once)."""
    return isinstance(exc, FINAL_ERRORS)


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the storage is failing (not the request): counts toward ``degraded``."""
    return isinstance(exc, StorageError | OSError | TimeoutError)


@dataclass
class _Failure:
    since: float       # monotonic time of the first failure of this piece of work
    error: str


class StoreHealth:
    """The pieces of work (``"grant:<id>"``, ``"flush:<name>"``) whose last store call failed with a
    storage error; ``degraded`` while there is any."""

    def __init__(self) -> None:
        self._failing: dict[str, _Failure] = {}

    def failed(self, work: str, exc: BaseException) -> None:
        """``work``'s store call failed; only storage errors (``unavailable``) count."""
        if unavailable(exc):
            old = self._failing.pop(work, None)   # re-inserted last: the latest failure is at the end
            self._failing[work] = _Failure(old.since if old else time.monotonic(), _short(exc))
        else:
            self._failing.pop(work, None)

    def succeeded(self, work: str) -> None:
        """``work`` succeeded, gave up or is no longer wanted."""
        self._failing.pop(work, None)

    @property
    def degraded(self) -> bool:
        return bool(self._failing)

    def report(self) -> dict[str, Any]:
        """For ``/health``: ``state`` ok/degraded; when degraded, how much work waits, since when (seconds
        ago, the oldest) and the latest error."""
        if not self._failing:
            return {"state": "ok"}
        kinds = [w.partition(":")[0] for w in self._failing]
        oldest = min(f.since for f in self._failing.values())
        latest = next(reversed(self._failing.values()))
        return {"state": "degraded", "grants_waiting": kinds.count("grant"),
                "flushes_failing": kinds.count("flush"),
                "for_seconds": round(time.monotonic() - oldest, 3), "error": latest.error}


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."
