"""The datastore API on Redis / Redis Cluster: same semantics as the embedded store, data in Redis hashes.

``open_store("redis://host:port/db?...")`` (also ``rediss://``) or ``open_store("redis+cluster://host:port")``
(any node; the client discovers the others); the URL and its options are parsed in ``datastore.url``.

Layers: this module is the ``Store`` API (rules, counters, replication checks); ``redis_codec`` turns
records into hashes and calls into script arguments and back (pure); ``redis_conn`` owns the connections,
calls the scripts by SHA on the key's master and maps redis-py failures to ``StorageError``;
``redis_lua`` holds the scripts. One ``HGETALL`` reads a record; TTL is ``PEXPIREAT`` on the hash.

Replicated writes (``replicas=N``, default 0): every write path (``put``, ``operate`` with a write op,
``delete``, the write of ``cas``) sends ``WAIT N replica_timeout`` right after its script on the same
connection and is acknowledged only when N replicas confirmed it; otherwise it raises
``ReplicationTimeoutError`` (in doubt). A ``cas`` whose ``fn`` writes nothing (a retried grant already in
the record) confirms the record it read the same way before returning it. Errors have the embedded store's
classes, codes and messages; every Redis failure is ``StorageError`` with ``in_doubt`` set (``redis_conn``).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from . import ops as _ops
from .base import CasFn, Store
from .errors import (
    GenerationError,
    InvalidKeyError,
    InvalidURLError,
    ReplicationTimeoutError,
    StoreClosedError,
)
from .keys import Key
from .policy import creates_data, validate_ops
from .record import Record
from .redis_codec import (
    KeyCodec,
    generation_arg,
    operate_args,
    operate_record,
    put_args,
    raise_failure,
    record_from_hash,
    writes,
)
from .redis_conn import RedisLink, connect
from .url import RedisTarget, parse_store_url

_time = time.time
GET_MANY_CHUNK = 4096  # keys per get_many pipeline
SCAN_BATCH = 512  # records fetched per scan pipeline


class RedisStore(Store):
    """The ``Store`` API on one Redis server or a Redis Cluster; build with ``open_store(url)``."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self.cluster = link.cluster
        self._max = link.target.max_record_bytes
        self._replicas = link.replicas
        self._closed = False
        self._codec = KeyCodec()
        self._cas_locks: dict[tuple[str, bytes], list[Any]] = {}
        self.counters = dict.fromkeys(("gets", "puts", "deletes", "operates", "scans", "pipelines",
                                       "cas_waits"), 0)

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")

    def _confirmed(self, key: Key, acked: int | None) -> None:
        """Raise ReplicationTimeoutError when a write that happened was confirmed by too few replicas."""
        if acked is None or acked >= self._replicas:
            return
        self._link.counters["replication_timeouts"] += 1
        t = self._link.target
        raise ReplicationTimeoutError(
            f"write of {key!r} applied on the redis master but confirmed by {acked} of {t.replicas} "
            f"replicas within replica_timeout {t.replica_timeout:g} s: in doubt (lost if the master fails "
            "before its replicas have it)", confirmed=acked, required=t.replicas)

    # --- reads -------------------------------------------------------------------------------------

    async def get(self, key: Key) -> Record | None:
        self._check()
        self.counters["gets"] += 1
        h = await self._link.hgetall(self._codec.name(key))
        return record_from_hash(key, h, _time())

    async def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        """One pipelined HGETALL per key (cluster: the client groups the pipeline by node)."""
        self._check()
        if not keys:
            return []
        self.counters["gets"] += len(keys)
        name = self._codec.name
        out: list[Record | None] = []
        for start in range(0, len(keys), GET_MANY_CHUNK):
            chunk = keys[start:start + GET_MANY_CHUNK]
            replies = await self._link.hgetall_many([name(k) for k in chunk])
            self.counters["pipelines"] += 1
            now = _time()
            out.extend(record_from_hash(k, h, now) for k, h in zip(chunk, replies, strict=True))
        return out

    async def scan(self, namespace: str, set: str) -> AsyncIterator[Record]:
        """SCAN MATCH over every node (cluster: every primary), then pipelined HGETALL per batch.

        Redis SCAN may return a key twice; duplicates are dropped. Records written during the scan may
        or may not appear (a scan is not a point-in-time snapshot on Redis).
        """
        self._check()
        if type(namespace) is not str or type(set) is not str:
            raise InvalidKeyError("scan needs namespace and set names (str)")
        self.counters["scans"] += 1
        seen: builtins.set[bytes] = builtins.set()
        batch: list[bytes] = []
        async for name in self._link.scan_names(self._codec.pattern(namespace, set)):
            if name in seen:
                continue
            seen.add(name)
            batch.append(name)
            if len(batch) >= SCAN_BATCH:
                for rec in await self._fetch(namespace, set, batch):
                    yield rec
                batch = []
        if batch:
            for rec in await self._fetch(namespace, set, batch):
                yield rec

    async def _fetch(self, namespace: str, set_name: str, names: list[bytes]) -> list[Record]:
        self._check()
        replies = await self._link.hgetall_many(names)
        self.counters["pipelines"] += 1
        now = _time()
        out = []
        for n, h in zip(names, replies, strict=True):
            rec = record_from_hash(Key(namespace, set_name, KeyCodec.user_key(n)), h, now)
            if rec is not None:
                out.append(rec)
        return out

    # --- writes ------------------------------------------------------------------------------------

    async def put(self, key: Key, bins: dict[str, Any], *, generation: int | None = None,
                  exists: str = "upsert", ttl: float | None = None) -> int:
        if self._closed:
            raise StoreClosedError("store is closed")
        arg = put_args(key, bins, generation, exists, ttl, self._max)
        reply, acked = await self._link.script("put", self._codec.name(key), arg, write=True)
        self.counters["puts"] += 1
        if type(reply) is int:
            if acked is not None:
                self._confirmed(key, acked)
            return reply
        raise_failure(key, reply, exists, generation, self._max)

    async def operate(self, key: Key, op_list: Sequence[_ops.Op], *, generation: int | None = None,
                      ttl: float | None = None) -> Record:
        if self._closed:
            raise StoreClosedError("store is closed")
        validate_ops(op_list)
        arg = operate_args(op_list, generation, ttl, self._max, creates_data(op_list))
        reply, acked = await self._link.script("operate", self._codec.name(key), arg, write=writes(op_list))
        self.counters["operates"] += 1
        if reply[0] != 0:
            raise_failure(key, reply, "upsert", generation, self._max)
        self._confirmed(key, acked)
        return operate_record(key, reply)

    async def delete(self, key: Key, *, generation: int | None = None) -> bool:
        self._check()
        reply, acked = await self._link.script("delete", self._codec.name(key), generation_arg(generation),
                                               write=True)
        if type(reply) is not int:
            raise_failure(key, reply, "upsert", generation, self._max)
        if reply:
            self.counters["deletes"] += 1
            self._confirmed(key, acked)
            return True
        return False

    async def cas(self, key: Key, fn: CasFn, *, retries: int = 16) -> Record:
        """``Store.cas``, with cas calls on one key from this store taking turns (a per-key lock).

        Over the network a read-then-write takes two round trips: without turns, N concurrent callers in
        one process would all read the same generation and all but one retry, needing N rounds. Conflicts
        with other processes (or other stores) still retry as usual. ``fn`` must not itself call ``cas``
        on the same key of the same store (it would wait for itself).
        """
        self._check()
        lk = (key.namespace, key.digest)
        entry = self._cas_locks.get(lk)
        if entry is None:
            entry = self._cas_locks[lk] = [asyncio.Lock(), 0]
        entry[1] += 1
        lock: asyncio.Lock = entry[0]
        if lock.locked():
            self.counters["cas_waits"] += 1
        try:
            async with lock:
                return await super().cas(key, fn, retries=retries)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._cas_locks.pop(lk, None)

    async def confirm_read(self, rec: Record) -> None:
        """With ``replicas`` > 0: re-replicate the record unchanged and WAIT (``redis_lua.CONFIRM``)."""
        if not self._replicas:
            return
        reply, acked = await self._link.script("confirm", self._codec.name(rec.key),
                                               generation_arg(rec.generation), write=True)
        if reply != 1:
            raise GenerationError(f"record {rec.key!r} changed since it was read (generation {reply[1]})")
        self._confirmed(rec.key, acked)

    # --- lifecycle and stats -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Close the connection pool(s). Idempotent; later calls raise StoreClosedError."""
        if self._closed:
            return
        self._closed = True
        await self._link.close()

    def stats(self) -> dict[str, Any]:
        """Counters plus ``records``, ``partitions_used`` and ``expired`` read from Redis.

        ``stats`` is synchronous (as on every backend), so the Redis figures come from a small blocking
        client: ``records``/``partitions_used`` by SCAN over this store's keys (exact up to
        ``redis_conn.STATS_SCAN_LIMIT`` keys, else ``records`` is the key count of the DB and
        ``records_estimated`` is set); ``expired`` is Redis' own count of expired keys (``INFO stats``,
        server-wide). Meant for metrics and the CLI, not hot paths.
        """
        t = self._link.target
        out: dict[str, Any] = {"backend": "redis-cluster" if self.cluster else "redis",
                               "max_record_bytes": self._max, "replicas": t.replicas,
                               "replica_timeout": t.replica_timeout}
        out.update(self.counters)
        out.update(self._link.counters)
        out.update(super().stats())
        if self._closed:
            return out
        try:
            out.update(self._link.server_stats(KeyCodec.partition))
        except Exception as exc:  # metrics must not fail the caller; say why they are missing
            out["stats_error"] = f"{type(exc).__name__}: {exc}"
        return out


async def open_target(target: RedisTarget) -> RedisStore:
    """Connect, check the server answers, load the scripts; ``StorageError`` if Redis is unreachable."""
    return RedisStore(await connect(target))


async def open_redis(url: str) -> RedisStore:
    """``open_store`` for Redis URLs only."""
    parsed = parse_store_url(url)
    if parsed.redis is None:
        raise InvalidURLError(f"not a redis URL: {parsed.scheme}://")
    return await open_target(parsed.redis)
