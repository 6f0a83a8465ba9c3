"""The Redis backend's connections: single-key commands (the scripts by SHA, and ``WAIT`` right after on
the same connection when writes must reach replicas; ``HGETALL``) on a record's master, pipelined reads,
scans, and every redis-py failure turned into a ``StorageError`` whose ``in_doubt`` says whether a write
may have happened.

Scripts are loaded once per primary and called with ``EVALSHA``. A call is one packed write, e.g.
``EVALSHA sha 1 key arg`` + ``WAIT replicas timeout_ms``, to one connection: from redis-py's pool on a
single server; on a cluster, from this link's own connections to the node that owns the key's slot (slot
map from redis-py's cluster client). ``NOSCRIPT`` (restart, ``SCRIPT FLUSH``, a promoted replica) resends
the call behind ``SCRIPT LOAD`` of every script, in one write. On a cluster, ``MOVED`` (failover,
resharding; the command did not run) retries at the node it names and re-reads the slot map in the
background, once for all callers; ``ASK`` retries there after ``ASKING``; ``TRYAGAIN`` after a short
pause; all bounded by ``MAX_REDIRECTS``. After an error reply the WAIT behind it is not awaited (the
connection is dropped): on a master without replicas it would block for the whole timeout.

``in_doubt`` of a failed write: False when the command provably did not run (no connection, an error
reply: ``CLUSTERDOWN``, ``READONLY``, ``LOADING``..., since the scripts check everything before writing);
True when the connection broke or timed out after the command was sent, and when the script wrote but
fewer replicas than asked confirmed it (``ReplicationTimeoutError``). Reads are never in doubt.

Relies on redis-py's asyncio ``ConnectionPool``, ``Connection`` and cluster slot map (tested: 8.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
import redis.asyncio as aredis
import redis.retry
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from .errors import StorageError, StoreClosedError
from .redis_lua import SCRIPTS
from .url import RedisTarget

MAX_REDIRECTS = 5  # MOVED / ASK / TRYAGAIN / NOSCRIPT retries of one script call
TRYAGAIN_PAUSE = 0.05  # seconds
REFRESH_MIN_GAP = 0.05  # seconds between two re-reads of the cluster's slot map
STATS_SCAN_LIMIT = 100_000  # server_stats() counts records exactly up to this many keys, then estimates
_REDIS_FAILURES = (RedisError, RedisClusterException, OSError)
# What a call into redis-py may raise when the cluster changes under it: besides its own errors, seen
# here: AttributeError from a connection that redis-py's failover handling disconnected while another task
# was about to write to it. Every such failure is a StorageError, never a crash of the caller.
_CALL_FAILURES = (Exception,)


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


class _Unsent(Exception):
    """A command could not be sent (no connection): it certainly did not run."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _resp(*parts: bytes) -> bytes:
    """One command in RESP (what redis-py's pack_command makes), packed once."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class NodeConnections:
    """This link's own connections to cluster nodes, by address, for single-key commands.

    Not shared with redis-py's cluster client: its failover handling disconnects the free connections of
    its node pools while they can be handed out again, which left writes waiting on dead streams. How
    many exist is bounded by the link's in-flight slots (each call holds one).
    """

    def __init__(self, kwargs: dict[str, Any], ssl: bool) -> None:
        self._kwargs = kwargs
        self._cls = aredis.SSLConnection if ssl else aredis.Connection
        self._free: dict[tuple[str, int], list[Any]] = {}
        self._all: list[Any] = []

    def acquire(self, addr: tuple[str, int]) -> Any:
        free = self._free.get(addr)
        if free:
            return free.pop()
        conn = self._cls(host=addr[0], port=addr[1], **self._kwargs)
        self._all.append(conn)
        return conn

    def release(self, addr: tuple[str, int], conn: Any) -> None:
        self._free.setdefault(addr, []).append(conn)

    async def close(self) -> None:
        for conn in self._all:
            with contextlib.suppress(*_REDIS_FAILURES):
                await conn.disconnect()
        self._all.clear()
        self._free.clear()


class RedisLink:
    """The connections of one store to one Redis server or cluster; build with ``await connect(target)``."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.cluster = target.cluster
        self.replicas = target.replicas
        self.closed = False
        conn: dict[str, Any] = {"host": target.host, "port": target.port,
                                "max_connections": target.max_connections + 4}  # headroom: reloads
        if target.username:
            conn["username"] = target.username
        if target.password:
            conn["password"] = target.password
        if target.ssl:
            conn["ssl"] = True
        if not target.cluster:
            conn["db"] = target.db
        for name in ("socket_timeout", "socket_connect_timeout"):
            if getattr(target, name) is not None:
                conn[name] = getattr(target, name)
        self._conn_kwargs = conn
        # no client-side retries: resending a write after a timeout could apply it twice (an incr, an append)
        if target.cluster:
            self.client: Any = RedisCluster(**conn, retry=Retry(NoBackoff(), 0))
            self._pool: Any = None
            own = {k: v for k, v in conn.items() if k in ("username", "password", "socket_timeout",
                                                          "socket_connect_timeout")}
            self._nodes = NodeConnections({**own, "retry": Retry(NoBackoff(), 0)}, target.ssl)
        else:
            self.client = aredis.Redis(**conn, retry=Retry(NoBackoff(), 0))
            self._pool = self.client.connection_pool
        self._sync: Any = None
        # redis-py's pools fail (not wait) when out of connections: commands take a slot first
        self.slots = Slots(target.max_connections)
        self.sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}
        self._heads = {name: b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n" % sha.encode()
                       for name, sha in self.sha.items()}
        self._wait_ms = max(1, round(target.replica_timeout * 1000))  # WAIT 0 would block forever
        self._wait = _resp(b"WAIT", b"%d" % target.replicas, b"%d" % self._wait_ms)
        self._load_all = b"".join(_resp(b"SCRIPT", b"LOAD", src.encode()) for src in SCRIPTS.values())
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshed_at = 0.0
        self.counters = dict.fromkeys(("script_loads", "redis_errors", "redirects", "topology_refreshes",
                                       "replication_timeouts", "in_doubt_errors"), 0)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Reach the server (cluster: read its slot map) and load the scripts; StorageError if unreachable."""
        try:
            if self.cluster:
                await self.client.initialize()
            else:
                await self.client.ping()
            await self.load_scripts()
        except _REDIS_FAILURES as exc:
            await self.close()
            raise StorageError(f"cannot use redis at {self.target.address}: {type(exc).__name__}: {exc}"
                               ) from exc

    async def close(self) -> None:
        """Close every connection. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        if self._pool is None:
            await self._nodes.close()
        with contextlib.suppress(*_REDIS_FAILURES):
            await self.client.aclose()
        if self._sync is not None:
            with contextlib.suppress(*_REDIS_FAILURES):
                self._sync.close()
            self._sync = None

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (cluster: on every primary; a promoted replica gets them on its first
        NOSCRIPT, in the same write as the retried call)."""
        for name, src in SCRIPTS.items():
            sha = await self.client.script_load(src)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != self.sha[name]:
                raise StorageError(f"redis gave SHA {sha} for script {name!r}, expected {self.sha[name]}")
            self.counters["script_loads"] += 1

    def error(self, exc: BaseException, *, in_doubt: bool = False) -> StorageError:
        """The StorageError for a redis-py failure (counted)."""
        self.counters["redis_errors"] += 1
        if in_doubt:
            self.counters["in_doubt_errors"] += 1
            return StorageError(f"redis: {type(exc).__name__}: {exc} (after the write was sent: it may or "
                                "may not have been applied)", in_doubt=True)
        return StorageError(f"redis: {type(exc).__name__}: {exc}")

    # --- single-key commands: scripts and HGETALL ---------------------------------------------------

    async def script(self, name: str, rkey: bytes, arg: bytes, *, write: bool) -> tuple[Any, int | None]:
        """Run script ``name`` on the record ``rkey`` with its one argument.

        ``write``: the call may change the record (then, with ``replicas`` > 0, ``WAIT`` follows on the
        same connection). Returns (script reply, replicas that confirmed or None when no WAIT was sent);
        the caller knows from the reply whether the script wrote. Raises StorageError (``in_doubt`` when
        ``write`` and the command may have run).
        """
        wait = write and self.replicas > 0
        cmd = self._heads[name] + b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(rkey), rkey, len(arg), arg)
        if wait:
            cmd += self._wait
        replies = await self._call(rkey, cmd, 2 if wait else 1, write=write, script=True)
        if not wait:
            return replies[0], None
        acked = replies[1]  # an error reply to WAIT confirms nothing
        return replies[0], acked if type(acked) is int else 0

    async def hgetall(self, name: bytes) -> dict[bytes, bytes]:
        """One record's hash (empty if absent), read from its master."""
        flat = (await self._call(name, _resp(b"HGETALL", name), 1, write=False, script=False))[0]
        if type(flat) is dict:  # RESP3
            return flat
        it = iter(flat)
        return dict(zip(it, it, strict=True))

    async def _call(self, rkey: bytes, cmd: bytes, n_replies: int, *, write: bool, script: bool) -> list[Any]:
        """Send packed commands for one key to its master (cluster: following redirects); the replies.

        The first reply is never an error reply: those raise (or, for NOSCRIPT / MOVED / ASK / TRYAGAIN,
        are handled and the commands sent again). ``script``: a NOSCRIPT reply loads the scripts on
        that connection, in the same write as the retried command.
        """
        if self.closed:
            raise StoreClosedError("store is closed")
        slots = self.slots
        if slots.free:
            slots.free -= 1
        else:
            await slots.wait()
        try:
            target: tuple[str, int] | None = None  # where a MOVED / ASK sent us
            prefix, skip = b"", 0
            for _ in range(MAX_REDIRECTS + 1):
                if self.closed:
                    raise StoreClosedError("store is closed")
                try:
                    if self._pool is not None:
                        replies = await self._exchange_single(prefix + cmd, skip + n_replies, skip)
                    else:
                        replies = await self._exchange_cluster(rkey, prefix + cmd, skip + n_replies, skip,
                                                               target)
                except _Unsent as exc:
                    self._refresh_soon()
                    raise self.error(exc.cause) from exc.cause
                except BusyLoadingError as exc:  # a LOADING error reply: the command did not run
                    raise self.error(exc) from exc
                except _CALL_FAILURES as exc:  # the connection broke after the command went out
                    self._refresh_soon()
                    raise self.error(exc, in_doubt=write) from exc
                replies = replies[skip:]
                prefix, skip, target = b"", 0, None
                first = replies[0]
                if not isinstance(first, ResponseError):
                    return replies
                if script and isinstance(first, NoScriptError):
                    self.counters["script_loads"] += len(SCRIPTS)
                    prefix, skip = self._load_all, len(SCRIPTS)
                elif isinstance(first, MovedError):  # the slot moved (failover): retry where it went
                    self.counters["redirects"] += 1
                    target = (first.host, first.port)
                    self._refresh_soon()
                elif isinstance(first, AskError):  # the slot is migrating: this key is there already
                    self.counters["redirects"] += 1
                    target = (first.host, first.port)
                    prefix, skip = _ASKING, 1
                elif isinstance(first, TryAgainError):
                    await asyncio.sleep(TRYAGAIN_PAUSE)
                else:
                    if isinstance(first, ClusterDownError):
                        self._refresh_soon()
                    raise self.error(first) from first
            raise StorageError(f"redis: command on {rkey!r} still redirected after {MAX_REDIRECTS} tries "
                               "(cluster changing); it did not run")
        finally:
            slots.release()

    async def _exchange_single(self, cmd: bytes, n_replies: int, main: int) -> list[Any]:
        pool = self._pool
        try:
            conn = await pool.get_connection()
        except _REDIS_FAILURES as exc:
            raise _Unsent(exc) from exc
        try:
            try:
                await _ready(conn)
            except _REDIS_FAILURES as exc:
                raise _Unsent(exc) from exc
            return await _send_and_read(conn, cmd, n_replies, main)
        finally:
            await pool.release(conn)

    async def _exchange_cluster(self, rkey: bytes, cmd: bytes, n_replies: int, main: int,
                                target: tuple[str, int] | None) -> list[Any]:
        """On the key's master (or ``target``), over this link's own connection to that node."""
        try:
            if target is None:
                node = self.client.get_node_from_key(rkey)  # raises SlotNotCoveredError
                target = (node.host, node.port)
            conn = self._nodes.acquire(target)
            try:
                await _ready(conn)
            except BaseException:
                self._nodes.release(target, conn)
                raise
        except _REDIS_FAILURES as exc:
            raise _Unsent(exc) from exc
        try:
            return await _send_and_read(conn, cmd, n_replies, main)
        finally:
            self._nodes.release(target, conn)

    # --- cluster slot map --------------------------------------------------------------------------

    def _refresh_soon(self) -> None:
        """Start a slot map refresh without waiting for it (a node failed: the map may be stale)."""
        if not self.cluster:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slot_map(REFRESH_MIN_GAP))
            self._refreshing.add_done_callback(_retrieve)

    async def _read_slot_map(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self.closed:
            return
        self.counters["topology_refreshes"] += 1
        self._refreshed_at = time.monotonic()
        await self.client.nodes_manager.initialize()

    # --- reads -------------------------------------------------------------------------------------

    async def hgetall_many(self, names: list[bytes]) -> list[dict[bytes, bytes]]:
        """HGETALL of every name in one pipeline (cluster: the client groups it by node)."""
        if self.closed:
            raise StoreClosedError("store is closed")
        pipe = self.client.pipeline(transaction=False) if not self.cluster else self.client.pipeline()
        for n in names:
            pipe.hgetall(n)
        try:
            async with self.slots:
                return await pipe.execute()
        except _CALL_FAILURES as exc:
            raise self.error(exc) from exc

    async def scan_names(self, pattern: bytes) -> AsyncIterator[bytes]:
        """Key names matching a pattern, node by node (cluster: each primary), one SCAN call at a time."""
        try:
            nodes = self.client.get_primaries() if self.cluster else [None]
            for node in nodes:
                cursor = 0
                for _ in range(10_000_000):  # SCAN ends at cursor 0; bounded all the same
                    if self.closed:
                        raise StoreClosedError("store is closed")
                    async with self.slots:
                        if node is None:
                            cursor, names = await self.client.scan(cursor=cursor, match=pattern, count=1000)
                        else:
                            cursors, names = await self.client.scan(cursor=cursor, match=pattern, count=1000,
                                                                    target_nodes=node)
                            cursor = cursors[node.name]
                    for n in names:
                        yield n
                    if cursor == 0:
                        break
        except StoreClosedError:
            raise
        except _CALL_FAILURES as exc:
            raise self.error(exc) from exc

    # --- blocking client for stats -----------------------------------------------------------------

    def server_stats(self, partition_of: Callable[[bytes], int]) -> dict[str, Any]:
        """``records``, ``partitions_used``, ``expired`` read with a small blocking client (see
        ``RedisStore.stats``); raises redis-py errors."""
        if self._sync is None:
            retry = redis.retry.Retry(NoBackoff(), 0)
            if self.cluster:
                self._sync = redis.RedisCluster(**self._conn_kwargs, retry=retry)
            else:
                self._sync = redis.Redis(**self._conn_kwargs, retry=retry)
        c = self._sync
        records = 0
        parts: set[int] = set()
        estimated = False
        for name in c.scan_iter(match=b"r:*", count=1000):
            records += 1
            with contextlib.suppress(IndexError, ValueError):
                parts.add(partition_of(name))
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
        return {"records": records, "records_estimated": estimated, "partitions_used": len(parts),
                "expired": sum(int(i.get("expired_keys", 0)) for i in infos)}


_ASKING = _resp(b"ASKING")


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Done callback: mark a background refresh's failure as seen (the next call meets it anyway)."""
    if not fut.cancelled():
        fut.exception()


async def _ready(conn: Any) -> None:
    """Make a pooled connection fit to send on: reconnect one the server has closed (or that holds stray
    bytes), so that a write is only ever sent on a live connection; raises if none can be made, before
    anything was sent. (redis-py 8's pool skips this check while maintenance notifications are "auto".)"""
    can_read = getattr(conn, "can_read", None) or conn.can_read_destructive  # redis-py 8 / 5
    try:
        stale = conn.is_connected and await can_read()
    except _REDIS_FAILURES:
        stale = True
    if stale:
        await conn.disconnect()
    await conn.connect()


async def _send_and_read(conn: Any, cmd: bytes, n_replies: int, main: int) -> list[Any]:
    """Write the packed commands, read their replies; a connection failure raises (redis-py drops the
    connection then). An error reply is returned as the exception. When the ``main`` command's reply is
    an error, the replies after it (the WAIT, which may block for the whole replica timeout on a master
    without replicas) are not awaited: the connection is dropped instead and the list ends there."""
    await conn.send_packed_command(cmd, check_health=False)
    out: list[Any] = []
    for i in range(n_replies):
        try:
            out.append(await conn.read_response())
        except ResponseError as exc:
            out.append(exc)
            if i == main and i + 1 < n_replies:
                await conn.disconnect()
                break
    return out


async def connect(target: RedisTarget) -> RedisLink:
    """A ready link (server reached, scripts loaded); StorageError if Redis is unreachable."""
    link = RedisLink(target)
    await link.open()
    return link
