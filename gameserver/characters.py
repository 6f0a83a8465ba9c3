"""Character persistence: load/create at login, XP grants via CAS, write-behind of position.

Record bins (key ``(namespace, set, name)``): ``name, secret, xp, level, kills, room, x, y, grants, created,
data`` (``data``: room type namespace -> that type's ``Player.data`` dict).

Write rules (no write may clobber another):
- ``xp``, ``level`` and ``grants`` change only through ``store.cas`` in ``grant_xp``; a grant carries an
  idempotency id kept in the bounded ``grants`` list, so a retried grant is applied once.
- ``room``, ``x``, ``y``, ``kills`` and ``data`` are written with ``store.put`` of exactly those bins (put
  merges bins), at most every ``flush_interval`` seconds per changed character, and on leave / disconnect /
  session end / shutdown. ``data`` changes are found by comparing with what was last written, so room code
  just assigns (``player.data["coins"] = 7``). The in-memory ``Character`` of a live session is the
  authority for those bins.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack

from datastore import Key, RecordExistsError

from .auth import SecretHasher
from .config import ServerConfig
from .errors import AuthFailed
from .game.rules import level_for_xp
from .leaderboard import Leaderboard
from .loginguard import LoginGuard, LoginThrottled
from .logs import event
from .metrics import Metrics
from .storehealth import StoreHealth

log = logging.getLogger("gameserver.characters")

POSITION_BINS = ("room", "x", "y", "kills")


class UnknownCharacter(Exception):
    """An XP grant names a character that has no record."""


@dataclass
class Character:
    """Live state of a character whose session exists (attached or in grace)."""

    name: str
    secret: str
    xp: int = 0
    level: int = 1
    kills: int = 0
    room: str = "town"
    x: float = 500.0
    y: float = 500.0
    data: dict[str, Any] = field(default_factory=dict, repr=False)
    dirty: bool = field(default=False, repr=False)
    saved_data: bytes = field(default=b"\x80", repr=False)   # msgpack of ``data`` as last written

    def packed_data(self) -> bytes | None:
        """``data`` as msgpack when it changed since the last write, else None (a write-behind check).
        Empty namespaces are left out (every room a character enters gets one)."""
        data = {k: v for k, v in self.data.items() if v}
        if not data and self.saved_data == b"\x80":
            return None
        packed = msgpack.packb(data, use_bin_type=True)
        return None if packed == self.saved_data else packed

    def wire(self) -> dict[str, Any]:
        """The protocol's ``character`` object."""
        return {"name": self.name, "level": self.level, "xp": self.xp, "room": self.room,
                "x": self.x, "y": self.y}


@dataclass(frozen=True)
class GrantResult:
    applied: bool        # False when the grant id was already in the record (a retry)
    xp: int
    level: int
    old_level: int


def new_grant_id() -> str:
    """Idempotency id of one grant: made once, reused on every retry of that grant."""
    return uuid.uuid4().hex


class CharacterStore:
    """Loads, creates and saves characters; owns the write-behind flusher."""

    def __init__(self, store: Any, config: ServerConfig, metrics: Metrics, leaderboard: Leaderboard,
                 spawn: dict[str, tuple[float, float]], hasher: SecretHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or SecretHasher(config.auth.hash_threads, config.auth.hash_nice)
        self.config = config
        self.metrics = metrics
        self.leaderboard = leaderboard
        self.spawn = spawn                      # room name -> spawn point
        self.live: dict[str, Character] = {}   # characters with a session
        self.shared_ranking: Any = None          # cluster: the ranking every node reads (awaited per grant)
        self.health = StoreHealth()              # grants and flushes waiting for the store (/health)
        metrics.store_degraded.set_function(lambda: float(self.health.degraded))
        self._flusher: asyncio.Task[None] | None = None
        auth = config.auth
        self.guard = LoginGuard(auth.login_failures, auth.login_window, auth.login_tracked_names)

    def key(self, name: str) -> Key:
        return Key(self.config.store.namespace, self.config.store.set, name)

    async def _timed(self, op: str, coro: Any) -> Any:
        start = time.perf_counter()
        try:
            return await coro
        finally:
            self.metrics.store_latency.labels(op).observe(time.perf_counter() - start)

    # -- start-up ----------------------------------------------------------------------------------
    async def rebuild_leaderboard(self) -> int:
        """Scan every character once and fill the leaderboard; returns the count."""
        count = 0
        async for rec in self.store.scan(self.config.store.namespace, self.config.store.set):
            bins = rec.bins
            name = bins.get("name") or rec.key.user_key
            xp = int(bins.get("xp", 0))
            self.leaderboard.update(str(name), xp, int(bins.get("level", level_for_xp(xp))))
            count += 1
        return count

    def leaderboard_entries(self) -> list[tuple[str, int, int]]:
        """(name, xp, level) of every character the in-memory leaderboard knows (to seed a shared one)."""
        return [(e["name"], e["xp"], e["level"]) for e in self.leaderboard.top(len(self.leaderboard))]

    # -- login -------------------------------------------------------------------------------------
    async def login(self, name: str, secret: str) -> Character:
        """The character of ``name`` if ``secret`` matches (creating it on first login); else AuthFailed.

        LoginThrottled, without hashing anything, while the name is locked by recent failures.
        """
        retry = self.guard.retry_after(name, time.monotonic())
        if retry is not None:
            raise LoginThrottled(retry)
        try:
            ch = await self._verify_or_create(name, secret)
        except AuthFailed:
            self.guard.failed(name, time.monotonic())
            raise
        self.guard.succeeded(name)
        return ch

    async def _verify_or_create(self, name: str, secret: str) -> Character:
        auth = self.config.auth
        live = self.live.get(name)
        if live is not None:
            if not await self.hasher.verify(secret, live.secret):
                raise AuthFailed("wrong secret")
            return live
        rec = await self._timed("get", self.store.get(self.key(name)))
        if rec is None:
            hashed = await self.hasher.hash(secret, n=auth.scrypt_n, r=auth.scrypt_r, p=auth.scrypt_p)
            room = self.config.game.start_room
            x, y = self.spawn[room]
            bins = {"name": name, "secret": hashed, "xp": 0, "level": 1, "kills": 0, "room": room,
                    "x": x, "y": y, "grants": [], "created": time.time()}
            try:
                await self._timed("put", self.store.put(self.key(name), bins, exists="create"))
            except RecordExistsError:
                return await self._verify_or_create(name, secret)   # lost a creation race: check the winner
            event(log, "character_created", name=name)
            ch = Character(name=name, secret=hashed, room=room, x=x, y=y)
            self.leaderboard.update(name, 0, 1)
            if self.shared_ranking is not None:
                await self.shared_ranking.record(name, 0, 1)
        else:
            bins = rec.bins
            if not await self.hasher.verify(secret, str(bins.get("secret", ""))):
                raise AuthFailed("wrong secret")
            ch = self._from_bins(name, bins)
        # another login may have won while we awaited: keep exactly one live object per name
        return self.live.setdefault(name, ch)

    def _from_bins(self, name: str, bins: dict[str, Any]) -> Character:
        room = str(bins.get("room", self.config.game.start_room))
        if room not in self.spawn:   # room removed from the configuration since
            room = self.config.game.start_room
            x, y = self.spawn[room]
        else:
            x, y = float(bins.get("x", 0.0)), float(bins.get("y", 0.0))
        xp = int(bins.get("xp", 0))
        data = bins.get("data")
        data = data if isinstance(data, dict) else {}
        return Character(name=name, secret=str(bins["secret"]), xp=xp, level=level_for_xp(xp),
                         kills=int(bins.get("kills", 0)), room=room, x=x, y=y, data=data,
                         saved_data=msgpack.packb(data, use_bin_type=True))

    async def adopt(self, name: str) -> Character:
        """The character of a session resumed from another node (the token already proved who it is)."""
        live = self.live.get(name)
        if live is not None:
            return live
        rec = await self._timed("get", self.store.get(self.key(name)))
        if rec is None:
            raise UnknownCharacter(f"character {name} does not exist")
        return self.live.setdefault(name, self._from_bins(name, rec.bins))

    async def reload(self, ch: Character) -> None:
        """Re-read everything of ``ch`` from the store (another node just flushed it)."""
        rec = await self._timed("get", self.store.get(self.key(ch.name)))
        if rec is not None:
            fresh = self._from_bins(ch.name, rec.bins)
            ch.xp, ch.level, ch.kills = fresh.xp, fresh.level, fresh.kills
            ch.room, ch.x, ch.y = fresh.room, fresh.x, fresh.y
            ch.data.clear()
            ch.data.update(fresh.data)
            ch.saved_data = fresh.saved_data

    async def refresh_xp(self, ch: Character) -> None:
        """Re-read XP (grants from other nodes); never lowers it."""
        rec = await self._timed("get", self.store.get(self.key(ch.name)))
        if rec is not None:
            xp = int(rec.bins.get("xp", 0))
            if xp > ch.xp:
                ch.xp, ch.level = xp, level_for_xp(xp)

    def release(self, name: str) -> None:
        """Forget a character whose session ended (call after its final flush)."""
        self.live.pop(name, None)
        self.health.succeeded(f"flush:{name}")   # nothing of it waits for the store any more

    # -- XP ----------------------------------------------------------------------------------------
    async def grant_xp(self, name: str, amount: int, grant_id: str) -> GrantResult:
        """Add ``amount`` XP to ``name`` once per ``grant_id`` (CAS on the record). Store errors propagate
        (``UnknownCharacter`` when there is no record); ``gameserver.grants`` decides what to retry.

        Guarantee: when this returns, the record holds the grant with the store's configured durability
        (with ``replicas=N`` on Redis: confirmed by N replicas); calling it again with the same id changes
        nothing and returns ``applied=False``, after the store confirmed the record holding it (so a retry
        after an in-doubt error is acknowledged only once the first write is as durable as a new one).
        The id is found while it is among the character's last ``persist.recent_grants`` grants.
        """
        keep = self.config.persist.recent_grants
        state: dict[str, Any] = {}
        attempts = 0

        def apply(bins: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal attempts
            attempts += 1
            if not bins:
                raise UnknownCharacter(f"character {name} does not exist")
            xp = int(bins.get("xp", 0))
            grants = list(bins.get("grants") or ())
            old_level = level_for_xp(xp)
            if grant_id in grants:
                state.update(applied=False, xp=xp, level=old_level, old_level=old_level)
                return None
            xp += amount
            grants.append(grant_id)
            state.update(applied=True, xp=xp, level=level_for_xp(xp), old_level=old_level)
            # cas writes the whole record (exists=replace + generation): keep every other bin as read
            return {**bins, "xp": xp, "level": level_for_xp(xp), "grants": grants[-keep:]}

        try:
            await self._timed("cas", self.store.cas(self.key(name), apply,
                                                    retries=self.config.persist.cas_retries))
        finally:
            if attempts > 1:
                self.metrics.cas_retries.inc(attempts - 1)
        result = GrantResult(state["applied"], state["xp"], state["level"], state["old_level"])
        live = self.live.get(name)
        if live is not None:
            live.xp, live.level = result.xp, result.level
        self.leaderboard.update(name, result.xp, result.level)
        if self.shared_ranking is not None:
            try:
                await self.shared_ranking.record(name, result.xp, result.level)
            except Exception as exc:   # the grant is stored; the ranking catches up at the next grant
                event(log, "ranking_failed", level=logging.WARNING, name=name, error=repr(exc))
        return result

    # -- write-behind ------------------------------------------------------------------------------
    def mark_dirty(self, ch: Character) -> None:
        ch.dirty = True

    async def flush(self, ch: Character) -> None:
        """Write position, room, kills (and ``data`` when it changed) now: only those bins."""
        ch.dirty = False
        bins: dict[str, Any] = {"room": ch.room, "x": ch.x, "y": ch.y, "kills": ch.kills}
        packed = ch.packed_data()
        if packed is not None:
            bins["data"] = msgpack.unpackb(packed)   # a snapshot: room code may change ``data`` meanwhile
        work = f"flush:{ch.name}"
        try:
            await self._timed("put", self.store.put(self.key(ch.name), bins, exists="update"))
        except Exception as exc:
            ch.dirty = True   # try again next period
            self.health.failed(work, exc)
            raise
        self.health.succeeded(work)
        if packed is not None:
            ch.saved_data = packed

    FLUSH_BATCH = 256

    async def flush_dirty(self) -> int:
        """Flush every changed live character; errors are logged and retried next period.

        The writes of a batch are in flight together, so the store's group commit makes them one log
        write and one fsync (one by one, 1,000 moving players cost 1,000 fsyncs every period).
        """
        changed: list[Character] = []
        for ch in list(self.live.values()):
            try:
                if ch.dirty or ch.packed_data() is not None:
                    changed.append(ch)
            except Exception as exc:   # room code put something unstorable in data
                event(log, "flush_failed", level=logging.WARNING, name=ch.name, error=repr(exc))
        for start in range(0, len(changed), self.FLUSH_BATCH):
            batch = changed[start:start + self.FLUSH_BATCH]
            results = await asyncio.gather(*(self.flush(ch) for ch in batch), return_exceptions=True)
            for ch, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):   # store down: retried next period
                    event(log, "flush_failed", level=logging.WARNING, name=ch.name, error=repr(result))
        return len(changed)

    async def flush_all(self) -> None:
        for ch in list(self.live.values()):
            try:
                await self.flush(ch)
            except Exception as exc:
                event(log, "flush_failed", level=logging.ERROR, name=ch.name, error=repr(exc))

    def start_flusher(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def stop_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None

    async def _flush_loop(self) -> None:
        period = self.config.persist.flush_interval
        while True:
            await asyncio.sleep(period)
            await self.flush_dirty()
