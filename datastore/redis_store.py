"""The datastore API on Redis / Redis Cluster: same semantics as the embedded store, data in Redis hashes.

``open_redis("redis://host:port/db?max_record_bytes=N")`` (also ``rediss://``) or
``open_redis("redis+cluster://host:port")`` (any node; the client discovers the others).
Options: ``max_record_bytes`` (default 131072), ``socket_timeout``, ``socket_connect_timeout``,
``max_connections``; others raise ``InvalidURLError``.

Layout: each record is one hash at ``r:<ns>:<set>:{<ns>:<partition>}:<tag><user key>``. Namespace and set
are percent-encoded (no ``:``, braces or glob characters survive), the hash tag carries the partition so
Redis Cluster spreads the 4096 partitions of a namespace over its slots, and the user key is its type tag
(``s`` str, ``i`` int, ``b`` bytes) followed by its UTF-8 / decimal / raw bytes, so ``scan`` gives back the
original key. Fields: one per bin (int as decimal string so ``HINCRBY`` works, float ``f`` + repr, others
``m`` + msgpack), plus reserved ``\\xffg`` (generation) and ``\\xffe`` (expiry, Unix microseconds) whose
0xFF byte no UTF-8 bin name can hold: every bin name the embedded store takes works here too. TTL is
``PEXPIREAT`` on the hash, so Redis reclaims expired records itself. One ``HGETALL`` reads a record.

Writes (conditional put, delete with generation, ``operate``) are Lua scripts (``datastore.redis_lua``)
loaded once per connection target and called with ``EVALSHA``; on ``NOSCRIPT`` (server restarted or
``SCRIPT FLUSH``) they are loaded again and the call retried. A call is ``EVALSHA sha 1 key arg``: ``put``
and ``operate`` pack all their arguments into one msgpack string (the script unpacks it with Redis'
``cmsgpack``), and on a single server the command, packed once, goes straight to a pooled connection
(redis-py's per-command client layer cost more than the script). Errors have the embedded store's classes,
codes and messages; a Redis failure (connection, timeout, server error) is ``StorageError`` (``io_error``):
the write may or may not have happened, like any unacknowledged write.

Record size is the sum of bin name and encoded value lengths (close to, not byte-equal with, the embedded
store's packed size); a put whose given bins alone exceed the limit fails before anything is sent.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import msgpack
import redis
import redis.asyncio as aredis
import redis.retry
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from . import ops as _ops
from .base import CasFn, Store
from .errors import (
    InvalidBinError,
    InvalidKeyError,
    InvalidURLError,
    RecordNotFoundError,
    RecordTooBigError,
    StorageError,
    StoreClosedError,
)
from .keys import Key
from .policy import (
    EXISTS_POLICIES,
    INT_MAX,
    INT_MIN,
    TTL_KEEP,
    check_write,
    creates_data,
    expiry,
    validate_bins,
    validate_ops,
)
from .record import Record
from .redis_lua import SCRIPTS

GEN, EXP = b"\xffg", b"\xffe"
DEFAULT_MAX_RECORD_BYTES = 128 * 1024
DEFAULT_MAX_CONNECTIONS = 256  # commands in flight per store (cluster: at most this many per node too)
STATS_SCAN_LIMIT = 100_000  # stats() counts records exactly up to this many keys, then estimates
_MODE = {"upsert": "u", "create": "c", "update": "p", "replace": "r"}
_OP_KIND = {_ops.PUT: b"p", _ops.INCR: b"i", _ops.APPEND: b"a", _ops.REMOVE: b"x", _ops.READ: b"r",
            _ops.TOUCH: b"t"}
_packb = msgpack.Packer(use_bin_type=True).pack
# script arguments: raw strings only (Redis' cmsgpack has no bin type): bytes and str become Lua strings
_pack_args = msgpack.Packer(use_bin_type=False).pack
_unpackb = msgpack.unpackb
_time = time.time


# --- value and key encoding ------------------------------------------------------------------------


def encode_value(v: Any) -> bytes:
    """A bin value as stored in its hash field (None is never stored: it removes the bin)."""
    t = type(v)
    if t is int:
        return b"%d" % v
    if t is float:
        return b"f" + repr(v).encode()
    return b"m" + _packb(v)


def decode_value(b: bytes) -> Any:
    """Inverse of ``encode_value``."""
    c = b[0]
    if c == 109:  # m
        return _unpackb(b[1:])
    if c == 102:  # f
        return float(b[1:])
    return int(b)


def _ttl_spec(ttl: Any) -> bytes:
    """Validate a TTL argument (same rules and errors as the embedded store) and encode it for Lua."""
    if ttl is None:
        return b""
    expiry(ttl, 0.0, None)  # raises InvalidBinError on a bad TTL
    if ttl > 0:
        return repr(float(ttl)).encode()
    return b"K" if ttl == TTL_KEEP else b""


NAME_CACHE_SIZE = 4096  # KeyCodec remembers the Redis key names of up to this many recent records


class KeyCodec:
    """Record key <-> Redis key name; the ``r:<ns>:<set>:`` prefix is cached per (namespace, set), and the
    names of recently used records by digest (a record is its namespace and digest, as ``Key.__eq__``)."""

    def __init__(self) -> None:
        self._prefix: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._names: dict[bytes, tuple[str, bytes]] = {}

    def prefixes(self, namespace: str, set_name: str) -> tuple[bytes, bytes]:
        """(``r:<ns>:<set>:``, ``{<ns>:``) for a namespace and set."""
        p = self._prefix.get((namespace, set_name))
        if p is None:
            ns, st = quote(namespace, safe="").encode(), quote(set_name, safe="").encode()
            p = self._prefix[(namespace, set_name)] = (b"r:%s:%s:" % (ns, st), b"{%s:" % ns)
        return p

    def name(self, key: Key) -> bytes:
        """The Redis key of a record."""
        hit = self._names.get(key.digest)
        if hit is not None and hit[0] == key.namespace:
            return hit[1]
        name = self._build(key)
        if len(self._names) >= NAME_CACHE_SIZE:
            self._names.clear()
        self._names[key.digest] = (key.namespace, name)
        return name

    def _build(self, key: Key) -> bytes:
        head, tag = self.prefixes(key.namespace, key.set)
        uk = key.user_key
        t = type(uk)
        if t is str:
            enc = b"s" + uk.encode()  # type: ignore[union-attr]
        elif t is int:
            enc = b"i%d" % uk
        else:
            enc = b"b" + uk  # type: ignore[operator]
        return b"%s%s%d}:%s" % (head, tag, key.partition, enc)

    @staticmethod
    def user_key(name: bytes) -> str | int | bytes:
        """The user key encoded at the end of a Redis key name."""
        enc = name.split(b":", 5)[5]
        t, raw = enc[:1], enc[1:]
        if t == b"s":
            return raw.decode()
        if t == b"i":
            return int(raw)
        return bytes(raw)

    def pattern(self, namespace: str, set_name: str) -> bytes:
        """SCAN MATCH pattern for every record of one set."""
        return self.prefixes(namespace, set_name)[0] + b"*"


class Slots:
    """A FIFO counting semaphore (``asyncio.Semaphore``'s job) whose uncontended path can be inlined.

    Take a slot with ``if slots.free: slots.free -= 1`` else ``await slots.wait()``, give it back with
    ``slots.release()`` (or use ``async with slots``). A released slot goes straight to the oldest waiter,
    so ``free`` is only non-zero while nobody waits: a newcomer never overtakes a waiter.
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        """Wait for a slot (call only when ``free`` is 0)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    async def __aenter__(self) -> None:
        if self.free:
            self.free -= 1
        else:
            await self.wait()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


# --- the store -------------------------------------------------------------------------------------


class RedisStore(Store):
    """The ``Store`` API on one Redis server or a Redis Cluster; build with ``open_redis(url)``."""

    def __init__(self, client: Any, *, cluster: bool, max_record_bytes: int, sync_factory: Any,
                 max_in_flight: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._r = client
        # redis-py's pools fail (not wait) when out of connections: commands take a slot first
        self._slots = Slots(max_in_flight)
        self.cluster = cluster
        self._max = max_record_bytes
        self._sync_factory = sync_factory
        self._sync: Any = None
        self._closed = False
        self._codec = KeyCodec()
        self._sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}
        # One pre-packed EVALSHA per call: the command head of each script, then key and argument. On one
        # server the command goes straight to a pooled connection (what a redis-py pipeline does): the
        # client's per-command layer costs more than the script here. A cluster client routes by key
        # (and follows MOVED/ASK), so there scripts go through execute_command.
        self._resp_head = {name: b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n" % sha.encode()
                           for name, sha in self._sha.items()}
        self._pool = None
        if not cluster and getattr(client, "connection", None) is None:
            self._pool = getattr(client, "connection_pool", None)
        self._cas_locks: dict[tuple[str, bytes], list[Any]] = {}
        self.counters = dict.fromkeys(
            ("gets", "puts", "deletes", "operates", "scans", "pipelines", "script_loads", "cas_waits",
             "redis_errors"), 0)

    # --- plumbing ----------------------------------------------------------------------------------

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (cluster: on every primary)."""
        for name, src in SCRIPTS.items():
            sha = await self._r.script_load(src)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != self._sha[name]:
                raise StorageError(f"redis gave SHA {sha} for script {name!r}, expected {self._sha[name]}")
            self.counters["script_loads"] += 1

    async def _script(self, name: str, rkey: bytes, arg: bytes) -> Any:
        """EVALSHA a script on one record with its one argument; reload all scripts once on NOSCRIPT."""
        if self._closed:
            raise StoreClosedError("store is closed")
        slots = self._slots
        if slots.free:
            slots.free -= 1
        else:
            await slots.wait()
        try:
            pool = self._pool
            if pool is None:
                try:
                    return await self._r.execute_command("EVALSHA", self._sha[name], 1, rkey, arg)
                except NoScriptError:
                    await self.load_scripts()
                    return await self._r.execute_command("EVALSHA", self._sha[name], 1, rkey, arg)
            cmd = b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n" % (self._resp_head[name], len(rkey), rkey, len(arg), arg)
            for attempt in (0, 1):
                # send_packed_command / read_response drop the connection on any failure (as
                # execute_command does); an error reply leaves it usable
                conn = await pool.get_connection()
                try:
                    await conn.send_packed_command(cmd)
                    return await conn.read_response()
                except NoScriptError:
                    if attempt:
                        raise
                finally:
                    await pool.release(conn)
                await self.load_scripts()
            raise AssertionError("unreachable")
        except (RedisError, OSError) as exc:
            raise self._storage_error(exc) from exc
        finally:
            slots.release()

    def _storage_error(self, exc: BaseException) -> StorageError:
        self.counters["redis_errors"] += 1
        return StorageError(f"redis: {type(exc).__name__}: {exc}")

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")

    def _record(self, key: Key, h: dict[bytes, bytes], now: float) -> Record | None:
        """Build a Record from an HGETALL reply (None if absent, not a record, or expired)."""
        if not h:
            return None
        gen = h.pop(GEN, None)
        if gen is None:
            return None
        exp_raw = h.pop(EXP, None)
        exp = None
        if exp_raw is not None:
            exp = int(exp_raw) / 1e6
            if exp <= now:
                return None
        bins = {f.decode(): decode_value(v) for f, v in h.items()}
        return Record(key, bins, int(gen), exp)

    @staticmethod
    def _bins_error(what: bytes, name: bytes, old: bytes) -> InvalidBinError:
        """The embedded store's InvalidBinError for a failed op (messages from ``policy.apply_ops``)."""
        b = name.decode()
        if what == b"overflow":
            return InvalidBinError(f"incr on bin {b!r} overflows 64 bits")
        kind = type(decode_value(old)).__name__ if old else "nothing"
        if what == b"list":
            return InvalidBinError(f"append on bin {b!r} holding {kind}, not a list")
        return InvalidBinError(f"incr on bin {b!r} holding {kind}, not a number")

    # --- reads -------------------------------------------------------------------------------------

    async def get(self, key: Key) -> Record | None:
        self._check()
        self.counters["gets"] += 1
        try:
            async with self._slots:
                h = await self._r.hgetall(self._codec.name(key))
        except (RedisError, OSError) as exc:
            raise self._storage_error(exc) from exc
        return self._record(key, h, _time())

    async def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        """One pipelined HGETALL per key (cluster: the client groups the pipeline by node)."""
        self._check()
        if not keys:
            return []
        self.counters["gets"] += len(keys)
        name = self._codec.name
        out: list[Record | None] = []
        try:
            for start in range(0, len(keys), 4096):
                chunk = keys[start:start + 4096]
                pipe = self._r.pipeline(transaction=False) if not self.cluster else self._r.pipeline()
                for k in chunk:
                    pipe.hgetall(name(k))
                async with self._slots:
                    replies = await pipe.execute()
                self.counters["pipelines"] += 1
                now = _time()
                out.extend(self._record(k, h, now) for k, h in zip(chunk, replies, strict=True))
        except (RedisError, OSError) as exc:
            raise self._storage_error(exc) from exc
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
        pattern = self._codec.pattern(namespace, set)
        seen: builtins.set[bytes] = builtins.set()
        batch: list[bytes] = []
        try:
            async for name in self._scan_names(pattern):
                if name in seen:
                    continue
                seen.add(name)
                batch.append(name)
                if len(batch) >= 512:
                    for rec in await self._fetch(namespace, set, batch):
                        yield rec
                    batch = []
            if batch:
                for rec in await self._fetch(namespace, set, batch):
                    yield rec
        except (RedisError, OSError) as exc:
            raise self._storage_error(exc) from exc

    async def _scan_names(self, pattern: bytes) -> AsyncIterator[bytes]:
        """Key names matching a pattern, node by node (cluster: each primary), one SCAN call at a time."""
        if not self.cluster:
            cursor = 0
            while True:
                self._check()
                async with self._slots:
                    cursor, names = await self._r.scan(cursor=cursor, match=pattern, count=1000)
                for n in names:
                    yield n
                if cursor == 0:
                    return
        for node in self._r.get_primaries():
            cursor = 0
            while True:
                self._check()
                async with self._slots:
                    cursors, names = await self._r.scan(cursor=cursor, match=pattern, count=1000,
                                                        target_nodes=node)
                for n in names:
                    yield n
                cursor = cursors[node.name]
                if cursor == 0:
                    break

    async def _fetch(self, namespace: str, set_name: str, names: list[bytes]) -> list[Record]:
        self._check()
        pipe = self._r.pipeline(transaction=False) if not self.cluster else self._r.pipeline()
        for n in names:
            pipe.hgetall(n)
        async with self._slots:
            replies = await pipe.execute()
        self.counters["pipelines"] += 1
        now = _time()
        out = []
        for n, h in zip(names, replies, strict=True):
            rec = self._record(Key(namespace, set_name, KeyCodec.user_key(n)), h, now)
            if rec is not None:
                out.append(rec)
        return out

    # --- writes ------------------------------------------------------------------------------------

    async def put(self, key: Key, bins: dict[str, Any], *, generation: int | None = None,
                  exists: str = "upsert", ttl: float | None = None) -> int:
        if self._closed:
            raise StoreClosedError("store is closed")
        # validate and encode in one pass; anything unusual goes through validate_bins, which raises the
        # embedded store's error (or, for a valid container value, passes)
        if type(bins) is not dict:
            validate_bins(bins)
        sets: list[bytes] = []
        dels: list[bytes] = []
        size = 0
        checked = False
        for name, value in bins.items():
            if type(name) is not str or not name:
                validate_bins(bins)
            f = name.encode()
            t = type(value)
            if t is int:
                if not INT_MIN <= value <= INT_MAX:
                    validate_bins(bins)
                v = b"%d" % value
            elif t is str or t is bytes or t is bool:
                v = b"m" + _packb(value)
            elif t is float:
                v = b"f" + repr(value).encode()
            elif value is None:
                dels.append(f)
                continue
            else:
                if not checked:
                    validate_bins(bins)
                    checked = True
                v = b"m" + _packb(value)
            size += len(f) + len(v)
            sets += (f, v)
        mode = _MODE.get(exists)
        if mode is None:
            raise InvalidBinError(f"exists must be one of {EXISTS_POLICIES}, got {exists!r}")
        spec = b"" if ttl is None else _ttl_spec(ttl)
        if size > self._max:
            raise RecordTooBigError(f"record {key!r} packs to {size} bytes > max_record_bytes {self._max}")
        # seven msgpack objects one after the other (the script unpacks them as seven values): a fixarray
        # of them without its one header byte
        arg = _pack_args((mode, b"" if generation is None else b"%d" % generation, spec, self._max, size,
                          sets, dels))[1:]
        reply = await self._script("put", self._codec.name(key), arg)
        self.counters["puts"] += 1
        if type(reply) is int:
            return reply
        self._raise(key, reply, exists, generation)
        raise AssertionError("unreachable")

    def _raise(self, key: Key, reply: list[Any], exists: str, generation: int | None) -> None:
        status = reply[0]
        if status == 1:
            cur = int(reply[1])
            check_write(exists, generation, None if cur < 0 else cur)
            raise StorageError(f"redis script refused a write the policy allows ({reply!r})")
        if status == 2:
            raise RecordTooBigError(
                f"record {key!r} packs to {int(reply[1])} bytes > max_record_bytes {self._max}")
        if status == 3:
            raise RecordNotFoundError(f"operate on absent {key!r} without an op that creates data")
        if status == 4:
            raise self._bins_error(reply[1], reply[2], reply[3])
        raise StorageError(f"unexpected redis script reply {reply!r}")

    async def operate(self, key: Key, op_list: Sequence[_ops.Op], *, generation: int | None = None,
                      ttl: float | None = None) -> Record:
        if self._closed:
            raise StoreClosedError("store is closed")
        validate_ops(op_list)
        args: list[Any] = [b"" if generation is None else b"%d" % generation,
                           b"" if ttl is None else _ttl_spec(ttl), self._max, creates_data(op_list)]
        for op in op_list:
            kind = op.kind
            value: Any = b""
            if kind == _ops.PUT:
                value = b"" if op.value is None else encode_value(op.value)
            elif kind == _ops.INCR:
                value = encode_value(op.value)
            elif kind == _ops.APPEND:
                value = _packb(op.value)
            elif kind == _ops.TOUCH:
                value = _ttl_spec(op.value)
            elif kind not in _OP_KIND:
                raise InvalidBinError(f"unknown op kind {kind!r}")
            args += (_OP_KIND[kind], b"" if op.bin is None else op.bin.encode(), value,
                     b"" if op.max_len is None else b"%d" % op.max_len)
        reply = await self._script("operate", self._codec.name(key), _pack_args(args))
        self.counters["operates"] += 1
        if reply[0] != 0:
            self._raise(key, reply, "upsert", generation)
        exp = int(reply[2])
        reads = {reply[i].decode(): decode_value(reply[i + 1]) for i in range(3, len(reply), 2)}
        return Record(key, reads, int(reply[1]), None if exp < 0 else exp / 1e6)

    async def delete(self, key: Key, *, generation: int | None = None) -> bool:
        self._check()
        reply = await self._script("delete", self._codec.name(key),
                                   b"" if generation is None else b"%d" % generation)
        if type(reply) is not int:
            self._raise(key, reply, "upsert", generation)
        if reply:
            self.counters["deletes"] += 1
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

    # --- lifecycle and stats -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Close the connection pool(s). Idempotent; later calls raise StoreClosedError."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._r.aclose()
        except (RedisError, OSError):
            pass
        if self._sync is not None:
            try:
                self._sync.close()
            except (RedisError, OSError):
                pass
            self._sync = None

    def stats(self) -> dict[str, Any]:
        """Counters plus ``records``, ``partitions_used`` and ``expired`` read from Redis.

        ``stats`` is synchronous (as on every backend), so the Redis figures come from a small blocking
        client: ``records``/``partitions_used`` by SCAN over this store's keys (exact up to
        ``STATS_SCAN_LIMIT`` keys, else ``records`` is the key count of the DB and ``records_estimated``
        is set); ``expired`` is Redis' own count of expired keys (``INFO stats``, server-wide). Meant for
        metrics and the CLI, not hot paths.
        """
        out: dict[str, Any] = {"backend": "redis-cluster" if self.cluster else "redis",
                               "max_record_bytes": self._max}
        out.update(self.counters)
        out.update(super().stats())
        if self._closed:
            return out
        try:
            out.update(self._server_stats())
        except (RedisError, OSError) as exc:
            out["stats_error"] = f"{type(exc).__name__}: {exc}"
        return out

    def _server_stats(self) -> dict[str, Any]:
        if self._sync is None:
            self._sync = self._sync_factory()
        c = self._sync
        records = 0
        parts: set[int] = set()
        estimated = False
        for name in c.scan_iter(match=b"r:*", count=1000):
            records += 1
            try:
                parts.add(int(name.split(b":", 5)[4][:-1]))
            except (IndexError, ValueError):
                pass
            if records >= STATS_SCAN_LIMIT:
                estimated = True
                break
        if self.cluster:
            infos = list(c.info("stats", target_nodes=redis.RedisCluster.PRIMARIES).values())
            if estimated:
                records = sum(c.dbsize(target_nodes=redis.RedisCluster.PRIMARIES).values())
        else:
            infos = [c.info("stats")]
            if estimated:
                records = c.dbsize()
        return {
            "records": records,
            "records_estimated": estimated,
            "partitions_used": len(parts),
            "expired": sum(int(i.get("expired_keys", 0)) for i in infos),
        }


# --- opening ---------------------------------------------------------------------------------------

_OPTIONS: dict[str, tuple[type, float]] = {
    "max_record_bytes": (int, 1),
    "socket_timeout": (float, 0.001),
    "socket_connect_timeout": (float, 0.001),
    "max_connections": (int, 1),
}


def parse_url(url: str) -> dict[str, Any]:
    """Split a ``redis://``, ``rediss://`` or ``redis+cluster://`` URL into connection settings."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "redis+cluster"):
        raise InvalidURLError(f"not a redis URL: {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise InvalidURLError(f"bad port in {url!r}") from None
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise InvalidURLError(f"redis database must be a number, got {path!r} in {url!r}") from None
    cluster = scheme == "redis+cluster"
    if cluster and db != 0:
        raise InvalidURLError(f"redis cluster has only database 0: {url!r}")
    opts: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise InvalidURLError(f"unknown redis store option {name!r} (known: {', '.join(_OPTIONS)})")
        typ, minimum = _OPTIONS[name]
        try:
            parsed = typ(value)
            if parsed < minimum:
                raise ValueError(f"must be >= {minimum}")
        except ValueError as exc:
            raise InvalidURLError(f"bad value {value!r} for store option {name!r}: {exc}") from None
        opts[name] = parsed
    conn: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": port}
    if parts.username:
        conn["username"] = unquote(parts.username)
    if parts.password:
        conn["password"] = unquote(parts.password)
    if scheme == "rediss":
        conn["ssl"] = True
    if not cluster:
        conn["db"] = db
    for name in ("socket_timeout", "socket_connect_timeout"):
        if name in opts:
            conn[name] = opts[name]
    in_flight = opts.get("max_connections", DEFAULT_MAX_CONNECTIONS)
    conn["max_connections"] = in_flight + 4  # headroom: script reloads inside a permit
    return {"cluster": cluster, "conn": conn, "max_in_flight": in_flight,
            "max_record_bytes": opts.get("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)}


async def open_redis(url: str) -> RedisStore:
    """Connect, check the server answers, load the scripts; ``StorageError`` if Redis is unreachable."""
    cfg = parse_url(url)
    conn = cfg["conn"]
    cluster = cfg["cluster"]
    # no client-side retries: resending a write after a timeout could apply it twice (an incr, an append)
    no_retry = Retry(NoBackoff(), 0)
    if cluster:
        client: Any = RedisCluster(**conn, retry=no_retry)

        def sync_factory() -> Any:
            return redis.RedisCluster(**conn, retry=redis.retry.Retry(NoBackoff(), 0))
    else:
        client = aredis.Redis(**conn, retry=no_retry)

        def sync_factory() -> Any:
            return redis.Redis(**conn, retry=redis.retry.Retry(NoBackoff(), 0))

    store = RedisStore(client, cluster=cluster, max_record_bytes=cfg["max_record_bytes"],
                       sync_factory=sync_factory, max_in_flight=cfg["max_in_flight"])
    try:
        if cluster:
            await client.initialize()
        else:
            await client.ping()
        await store.load_scripts()
    except (RedisError, OSError) as exc:
        await store.close()
        where = f"{conn['host']}:{conn['port']}"
        raise StorageError(f"cannot use redis at {where}: {type(exc).__name__}: {exc}") from exc
    return store
