"""Redis implementations of the cluster seams: one Redis (``cluster.redis_url``) shared by every node.

Keys (``P`` = ``cluster.prefix``, default ``gs``):

- ``P:lease:<room>``  string node id, ``PX`` lease ttl. Acquire is ``SET NX`` (or re-``PEXPIRE`` by the
  holder), renew / release are compare-and-``PEXPIRE`` / compare-and-``DEL`` Lua scripts, so a node never
  extends or drops a lease another node took.
- ``P:nodes``         hash node id -> JSON ``{"url", "seen"}`` (presence; "alive" = seen within the ttl).
- ``P:char:<name>``   hash ``session, node, room, deadline`` (session directory); compare-on-session updates
  are Lua scripts. Entries of sessions in transit carry a ``PEXPIRE``.
- ``P:replay:<session>`` string, the replay buffer a hand-off left (``PX`` grace + lease ttl); taken by the
  adopting node with ``GET`` + ``DEL`` in one ``MULTI``.
- ``P:top``           sorted set, member = character, score = -xp (``ZADD LT``: XP only goes up; ascending
  order = highest XP first, ties by name like the in-memory leaderboard).
- ``P:inst:{<room>}``   set of the numbers (>= 2) of a room's other instances; the first always exists.
- ``P:seats:{<room>}:<n>`` sorted set, member = session id, score = expiry (ms, Redis clock): the seats of
  instance n. Taking a seat is one Lua script (join-or-create: fullest instance with a free seat, else the
  lowest free number), so simultaneous joins on any number of nodes never overfill an instance and never
  make twins. The scripts name seat keys they compute: one Redis, not Redis Cluster (``cluster.redis_url``).
- channel ``P:node:<id>``: JSON control messages to one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aredis

from ..game.rules import level_for_xp
from ..logs import event
from .interfaces import Handler, NodeInfo, SessionEntry

log = logging.getLogger("gameserver.cluster.redis")

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return cur
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# ARGV: ttl ms (0 = none), then field, value pairs
_CLAIM = """
local old = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return old
"""
# ARGV: session, ttl ms, field, value pairs
_UPDATE = """
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
_DROP = """
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Seats. KEYS[1]: the instance set; ARGV[1]: seat key prefix ("P:seats:{room}:"); times from Redis' clock.
_SEATS_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live(n)
  local k = ARGV[1] .. n
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  return k
end
"""
# ARGV: prefix, session, max_players, ttl ms -> instance number
_TAKE = _SEATS_NOW + """
local nums = redis.call('SMEMBERS', KEYS[1])
table.insert(nums, '1')
local best, bestc = nil, -1
for _, n in ipairs(nums) do
  local k = live(n)
  if redis.call('ZSCORE', k, ARGV[2]) then
    redis.call('ZADD', k, now + tonumber(ARGV[4]), ARGV[2])
    return tonumber(n)
  end
end
for _, n in ipairs(nums) do
  local c = redis.call('ZCARD', ARGV[1] .. n)
  if c < tonumber(ARGV[3]) and (c > bestc or (c == bestc and tonumber(n) < tonumber(best))) then
    best, bestc = n, c
  end
end
if not best then
  local used = {}
  for _, n in ipairs(nums) do used[tonumber(n)] = true end
  local n = 2
  while used[n] do n = n + 1 end
  best = tostring(n)
  redis.call('SADD', KEYS[1], best)
end
redis.call('ZADD', ARGV[1] .. best, now + tonumber(ARGV[4]), ARGV[2])
return tonumber(best)
"""
# ARGV: prefix, number, session, max_players, ttl ms -> 'ok' | 'full' | 'none'
_TAKE_EXACT = _SEATS_NOW + """
if ARGV[2] ~= '1' and redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then return 'none' end
local k = live(ARGV[2])
if not redis.call('ZSCORE', k, ARGV[3]) and redis.call('ZCARD', k) >= tonumber(ARGV[4]) then return 'full' end
redis.call('ZADD', k, now + tonumber(ARGV[5]), ARGV[3])
return 'ok'
"""
# ARGV: prefix, number, ttl ms, sessions...
_REFRESH = _SEATS_NOW + """
local k = live(ARGV[2])
for i = 4, #ARGV do redis.call('ZADD', k, 'XX', now + tonumber(ARGV[3]), ARGV[i]) end
return 1
"""
# ARGV: prefix -> flat list number, count
_INSTANCES = _SEATS_NOW + """
local nums = redis.call('SMEMBERS', KEYS[1])
table.insert(nums, '1')
local out = {}
for _, n in ipairs(nums) do
  local k = live(n)
  table.insert(out, tonumber(n))
  table.insert(out, redis.call('ZCARD', k))
end
return out
"""
# ARGV: prefix, number -> 1 when forgotten
_DISPOSE = _SEATS_NOW + """
local k = live(ARGV[2])
if redis.call('ZCARD', k) > 0 then return 0 end
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('DEL', k)
return 1
"""


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else max(1, int(seconds * 1000))


def _pairs(entry: SessionEntry) -> list[str]:
    return [x for kv in entry.fields().items() for x in kv]


def _hash(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisRoomLeases:
    def __init__(self, r: aredis.Redis, prefix: str) -> None:
        self.r = r
        self.prefix = prefix
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    def key(self, room: str) -> str:
        return f"{self.prefix}:lease:{room}"

    async def acquire(self, room: str, node: str, ttl: float) -> str:
        return str(await self._acquire(keys=[self.key(room)], args=[node, _ms(ttl)]))

    async def owner(self, room: str) -> str | None:
        value = await self.r.get(self.key(room))
        return None if value is None else str(value)

    async def renew(self, rooms: Iterable[str], node: str, ttl: float) -> set[str]:
        rooms = list(rooms)
        if not rooms:
            return set()
        async with self.r.pipeline(transaction=False) as pipe:
            for room in rooms:
                await self._renew(keys=[self.key(room)], args=[node, _ms(ttl)], client=pipe)
            results = await pipe.execute()
        return {room for room, ok in zip(rooms, results, strict=True) if not int(ok)}

    async def release(self, room: str, node: str) -> bool:
        return bool(int(await self._release(keys=[self.key(room)], args=[node])))


class RedisPresence:
    def __init__(self, r: aredis.Redis, prefix: str) -> None:
        self.r = r
        self.key = f"{prefix}:nodes"

    async def announce(self, info: NodeInfo) -> None:
        await self.r.hset(self.key, info.node, json.dumps({"url": info.url, "seen": info.seen}))

    @staticmethod
    def _info(node: str, raw: str) -> NodeInfo:
        data = json.loads(raw)
        return NodeInfo(node, str(data["url"]), float(data["seen"]))

    async def get(self, node: str) -> NodeInfo | None:
        raw = await self.r.hget(self.key, node)
        return None if raw is None else self._info(node, raw)

    async def nodes(self) -> list[NodeInfo]:
        return [self._info(k, v) for k, v in (await self.r.hgetall(self.key)).items()]

    async def withdraw(self, node: str) -> None:
        await self.r.hdel(self.key, node)


class RedisSessionDirectory:
    def __init__(self, r: aredis.Redis, prefix: str) -> None:
        self.r = r
        self.prefix = prefix
        self._claim = r.register_script(_CLAIM)
        self._update = r.register_script(_UPDATE)
        self._drop = r.register_script(_DROP)

    def key(self, name: str) -> str:
        return f"{self.prefix}:char:{name}"

    async def claim(self, name: str, entry: SessionEntry, ttl: float | None = None) -> SessionEntry | None:
        old = await self._claim(keys=[self.key(name)], args=[_ms(ttl), *_pairs(entry)])
        return SessionEntry.from_fields(_hash(old))

    async def get(self, name: str) -> SessionEntry | None:
        return SessionEntry.from_fields(await self.r.hgetall(self.key(name)))

    async def update(self, name: str, entry: SessionEntry, ttl: float | None = None) -> bool:
        return bool(int(await self._update(keys=[self.key(name)],
                                           args=[entry.session, _ms(ttl), *_pairs(entry)])))

    async def release(self, name: str, session: str) -> bool:
        return bool(int(await self._drop(keys=[self.key(name)], args=[session])))

    def replay_key(self, session: str) -> str:
        return f"{self.prefix}:replay:{session}"

    async def put_replay(self, session: str, text: str, ttl: float) -> None:
        await self.r.set(self.replay_key(session), text, px=_ms(ttl))

    async def take_replay(self, session: str) -> str | None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.get(self.replay_key(session))
            pipe.delete(self.replay_key(session))
            text, _deleted = await pipe.execute()
        return None if text is None else str(text)


class RedisPubSub:
    def __init__(self, r: aredis.Redis, prefix: str) -> None:
        self.r = r
        self.prefix = prefix
        self._ps: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._handlers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def channel(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    async def subscribe(self, node: str, handler: Handler) -> None:
        if self._ps is None:
            self._ps = self.r.pubsub(ignore_subscribe_messages=True)
        self._handlers[self.channel(node)] = handler
        await self._ps.subscribe(self.channel(node))
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                msg = await self._ps.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # connection trouble: redis-py reconnects and resubscribes
                event(log, "pubsub_read_failed", level=logging.WARNING, error=repr(exc))
                await asyncio.sleep(0.2)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            handler = self._handlers.get(msg["channel"])
            try:
                body = json.loads(msg["data"])
            except ValueError:
                continue
            if handler is not None and isinstance(body, dict):
                task = asyncio.get_running_loop().create_task(handler(body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def publish(self, node: str, message: dict[str, Any]) -> None:
        await self.r.publish(self.channel(node), json.dumps(message, separators=(",", ":")))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._ps is not None:
            with contextlib.suppress(Exception):
                await self._ps.aclose()
            self._ps = None


class RedisRanking:
    def __init__(self, r: aredis.Redis, prefix: str) -> None:
        self.r = r
        self.key = f"{prefix}:top"

    async def record(self, name: str, xp: int, level: int) -> None:
        await self.r.zadd(self.key, {name: -xp}, lt=True)

    async def record_many(self, entries: Iterable[tuple[str, int, int]]) -> None:
        batch: dict[str, int] = {}
        for name, xp, _level in entries:
            batch[name] = -xp
            if len(batch) >= 1000:
                await self.r.zadd(self.key, batch, lt=True)
                batch = {}
        if batch:
            await self.r.zadd(self.key, batch, lt=True)

    async def top(self, n: int) -> list[dict[str, Any]]:
        rows = await self.r.zrange(self.key, 0, max(0, n) - 1, withscores=True)
        return [{"name": name, "level": level_for_xp(-int(score)), "xp": -int(score)} for name, score in rows]


class RedisSeats:
    def __init__(self, r: aredis.Redis, prefix: str) -> None:
        self.prefix = prefix
        self._take = r.register_script(_TAKE)
        self._exact = r.register_script(_TAKE_EXACT)
        self._release = r
        self._refresh = r.register_script(_REFRESH)
        self._instances = r.register_script(_INSTANCES)
        self._dispose = r.register_script(_DISPOSE)

    def _keys(self, kind: str) -> tuple[list[str], str]:
        return [f"{self.prefix}:inst:{{{kind}}}"], f"{self.prefix}:seats:{{{kind}}}:"

    async def take(self, kind: str, session: str, max_players: int, ttl: float) -> int:
        keys, seats = self._keys(kind)
        return int(await self._take(keys=keys, args=[seats, session, max_players, _ms(ttl)]))

    async def take_exact(self, kind: str, number: int, session: str, max_players: int, ttl: float) -> str:
        keys, seats = self._keys(kind)
        return str(await self._exact(keys=keys, args=[seats, number, session, max_players, _ms(ttl)]))

    async def release(self, kind: str, number: int, session: str) -> None:
        _keys, seats = self._keys(kind)
        await self._release.zrem(f"{seats}{number}", session)

    async def refresh(self, kind: str, number: int, sessions: Iterable[str], ttl: float) -> None:
        sessions = list(sessions)
        if sessions:
            keys, seats = self._keys(kind)
            await self._refresh(keys=keys, args=[seats, number, _ms(ttl), *sessions])

    async def instances(self, kind: str) -> list[tuple[int, int]]:
        keys, seats = self._keys(kind)
        flat = await self._instances(keys=keys, args=[seats])
        return sorted((int(n), int(c)) for n, c in zip(flat[::2], flat[1::2], strict=True))

    async def dispose(self, kind: str, number: int) -> bool:
        if number == 1:
            return False
        keys, seats = self._keys(kind)
        return bool(int(await self._dispose(keys=keys, args=[seats, number])))


class RedisBackend:
    """Every seam on one Redis connection pool (``decode_responses``: keys and values are text)."""

    def __init__(self, url: str, prefix: str = "gs") -> None:
        # A blocking pool: a burst of callers (100 simultaneous joins) waits for a connection instead of
        # failing with "Too many connections" (redis-py's default pool raises past 100).
        pool = aredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10.0,
                                                      decode_responses=True)
        self.r = aredis.Redis(connection_pool=pool)
        self.leases = RedisRoomLeases(self.r, prefix)
        self.presence = RedisPresence(self.r, prefix)
        self.directory = RedisSessionDirectory(self.r, prefix)
        self.pubsub = RedisPubSub(self.r, prefix)
        self.ranking: RedisRanking | None = RedisRanking(self.r, prefix)
        self.seats = RedisSeats(self.r, prefix)

    async def close(self) -> None:
        await self.pubsub.close()
        await self.r.aclose()
