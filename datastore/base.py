"""``Store``: the public async API every backend implements; ``cas`` is implemented once, here."""

from __future__ import annotations

import abc
import asyncio
import inspect
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from .errors import GenerationError, RecordExistsError, RecordNotFoundError
from .keys import Key
from .ops import Op
from .policy import TTL_KEEP
from .record import Record

CasFn = Callable[[dict[str, Any]], Any]

CAS_BACKOFF_BASE = 0.0005   # seconds; doubled per further conflict
CAS_BACKOFF_CAP = 0.02


class Store(abc.ABC):
    """Async record store with Aerospike semantics (see ``datastore.policy`` for the write rules)."""

    cas_attempts = 0
    cas_retries = 0

    @abc.abstractmethod
    async def put(self, key: Key, bins: dict[str, Any], *, generation: int | None = None,
                  exists: str = "upsert", ttl: float | None = None) -> int:
        """Write bins (merge; None removes a bin); returns the new generation."""

    @abc.abstractmethod
    async def get(self, key: Key) -> Record | None:
        """The record, or None if absent or expired. The returned bins dict belongs to the caller."""

    @abc.abstractmethod
    async def operate(self, key: Key, op_list: Sequence[Op], *, generation: int | None = None,
                      ttl: float | None = None) -> Record:
        """Apply ops atomically (one generation bump); the result's bins hold what ``ops.read`` read."""

    @abc.abstractmethod
    async def delete(self, key: Key, *, generation: int | None = None) -> bool:
        """Delete; False when absent. Deleted records never come back (tombstones)."""

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        """``get`` for many keys, results in the same order."""

    @abc.abstractmethod
    def scan(self, namespace: str, set: str) -> AsyncIterator[Record]:
        """Every live record of a set (order unspecified; a snapshot taken when iteration starts)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the store; further calls raise StoreClosedError."""

    async def cas(self, key: Key, fn: CasFn, *, retries: int = 16) -> Record:
        """Read-modify-write: ``fn(bins or {})`` returns the record's new bins (all of them).

        Writes with ``generation=`` the one read (``exists="create"`` if absent), keeping the record's
        expiry, and retries on conflict (the first retry at once, later ones after a capped, jittered
        backoff). Raises GenerationError after ``retries`` retries. ``fn`` may be a
        coroutine function; if it returns None nothing is written and the current record is returned
        (RecordNotFoundError if there is none), once the backend confirmed it (``confirm_read``).
        """
        for attempt in range(retries + 1):
            self.cas_attempts += 1
            rec = await self.get(key)
            new = fn(rec.bins if rec is not None else {})
            if inspect.isawaitable(new):
                new = await new
            try:
                if new is None:
                    if rec is None:
                        break
                    await self.confirm_read(rec)
                    return rec
                if rec is None:
                    gen = await self.put(key, new, exists="create")
                    return Record(key, {k: v for k, v in new.items() if v is not None}, gen, None)
                gen = await self.put(key, new, generation=rec.generation, exists="replace", ttl=TTL_KEEP)
                return Record(key, {k: v for k, v in new.items() if v is not None}, gen, rec.expires_at)
            except (GenerationError, RecordExistsError, RecordNotFoundError):
                self.cas_retries += 1
                if attempt:
                    # Repeated conflicts: capped, jittered backoff so contending writers (other
                    # connections, other nodes) spread out instead of colliding in lockstep.
                    delay = min(CAS_BACKOFF_CAP, CAS_BACKOFF_BASE * 2**attempt)
                    await asyncio.sleep(random.uniform(0, delay))
        else:
            raise GenerationError(f"cas on {key!r} still conflicting after {retries} retries")
        raise RecordNotFoundError(f"cas on absent {key!r}: fn returned None, nothing written")

    async def confirm_read(self, rec: Record) -> None:
        """Called by ``cas`` when ``fn`` wrote nothing: make sure ``rec`` is as durable as an acknowledged
        write would be, or raise GenerationError if the record changed since (``cas`` then retries).

        A write reported in doubt and retried with the same idempotency id ends here (the id is already
        in the record): the retry must not succeed before the record is confirmed. This default does
        nothing (every record the backend shows is as durable as its writes).
        """
        return None

    def stats(self) -> dict[str, Any]:
        """Counters for metrics; backends add their own."""
        return {"cas_attempts": self.cas_attempts, "cas_retries": self.cas_retries}

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
