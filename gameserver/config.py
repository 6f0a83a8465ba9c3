"""Server configuration: typed pydantic models, one per section, validated at start-up.

Sources, lowest precedence first: model defaults < TOML file (``--config``) < ``GAMESERVER_*`` environment
variables < command-line flags. Nested fields use a double underscore in env names, for example
``GAMESERVER_LIMITS__RATE_PER_SEC=50`` or ``GAMESERVER_GAME__TICK_RATE=30``. Top-level shortcuts:
``GAMESERVER_HOST``, ``GAMESERVER_PORT``, ``GAMESERVER_DATA``, ``GAMESERVER_STORE``, ``GAMESERVER_LOG_LEVEL``,
``GAMESERVER_ADMIN_TOKEN``, ``GAMESERVER_TOKEN_SECRET``, ``GAMESERVER_DURABILITY``, ``GAMESERVER_CONFIG``.

The config object is passed to ``GameServer``; nothing reads it from a global.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "GAMESERVER_"


class ConfigError(Exception):
    """Raised with a readable, multi-line message when configuration is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsConfig(_Section):
    """Per-session limits (PROTOCOL.md defaults)."""

    max_message_bytes: int = Field(16 * 1024, ge=256, description="bigger message -> bye too_large")
    hard_max_bytes: int = Field(1024 * 1024, ge=1024 * 1024, description="websocket layer cap (close 1009)")
    rate_per_sec: float = Field(30.0, gt=0)
    rate_burst: int = Field(60, ge=1)
    rate_kick_after: float = Field(3.0, gt=0, description="still over the rate after this -> bye")
    idle_timeout: float = Field(30.0, gt=0)
    reliable_queue: int = Field(512, ge=8, description="queued reliable messages before disconnect")
    write_buffer_high: int = Field(64 * 1024, ge=1024, description="socket buffer bytes = backed up")
    room_input_queue: int = Field(20_000, ge=16, description="queued room inputs before rejecting")
    close_timeout: float = Field(2.0, gt=0)
    socket_send_buffer: int | None = Field(None, ge=1024, description="SO_SNDBUF per connection (kernel)")
    max_connections: int = Field(10_000, ge=1, description="open websockets; more get HTTP 503 at upgrade")
    open_timeout: float = Field(10.0, gt=0, description="TCP accept -> finished handshake (slowloris)")
    listen_backlog: int = Field(2048, ge=16, description="TCP accept queue; the kernel caps it at somaxconn "
                                "(a burst of reconnects after a restart must not time out)")
    # admission of new logins (gameserver.admission): refused with error server_full / busy + retry_after
    max_sessions: int = Field(5000, ge=1, description="sessions (attached or in grace); more: server_full")
    max_loop_busy: float = Field(0.75, ge=0, le=1, description="share of the last second the event loop "
                                 "thread was on the CPU over which new logins get server_full; 0 disables")
    max_tick_lag: float = Field(0.02, ge=0, description="median tick lag (s, last second, least late room) "
                                "over which new logins get server_full; 0 disables")
    overload_recover: float = Field(3.0, ge=0, description="after overload, refuse until the load was this "
                                    "many seconds below the low marks (loop busy - 0.1, half the lag)")
    full_retry_after: float = Field(5.0, gt=0, description="retry_after (s) sent with server_full")
    login_queue: int = Field(1000, ge=1, description="logins waiting for a hashing thread; more: busy")
    login_max_wait: float = Field(5.0, gt=0, description="expected wait (s) for hashing over which: busy")


class AuthConfig(_Section):
    """Secrets hashing and resume tokens."""

    token_secret: str | None = Field(None, min_length=16, description="HMAC key; random per process if unset")
    token_ttl: float = Field(24 * 3600.0, gt=0, description="resume token lifetime, seconds")
    grace_seconds: float = Field(30.0, ge=0, description="reconnect grace after a dropped socket")
    scrypt_n: int = Field(2**11, ge=2, description="scrypt cost; 2**11 with r=8 is ~5 ms")
    scrypt_r: int = Field(8, ge=1)
    scrypt_p: int = Field(1, ge=1)
    hash_threads: int = Field(1, ge=1, le=32, description="dedicated hashing threads (logins hashed at once)")
    hash_nice: int = Field(5, ge=0, le=19, description="nice value of the hashing threads (Linux): the "
                           "event loop wins the core, hashing gets what is left")
    login_failures: int = Field(5, ge=1, description="wrong secrets for one name within login_window "
                                "that lock the name for login_window seconds (gameserver.loginguard)")
    login_window: float = Field(60.0, gt=0, description="seconds failures count, and a lock lasts")
    login_tracked_names: int = Field(10_000, ge=1, description="names tracked for failed logins "
                                     "(when full, the least recently failed is forgotten)")

    @model_validator(mode="after")
    def _n_power_of_two(self) -> AuthConfig:
        if self.scrypt_n & (self.scrypt_n - 1):
            raise ValueError("scrypt_n must be a power of two")
        return self


class RulesConfig(_Section):
    """Game rules handed to every room (see gameserver.game.room.Rules)."""

    speed: float = Field(300.0, gt=0)
    attack_range: float = Field(64.0, gt=0)
    attack_cooldown: float = Field(0.25, ge=0)
    respawn_seconds: float = Field(5.0, ge=0)
    cell_size: float = Field(250.0, gt=0)
    dmg_min: int = Field(10, ge=1)
    dmg_max: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _dmg_order(self) -> RulesConfig:
        if self.dmg_max < self.dmg_min:
            raise ValueError("dmg_max must be >= dmg_min")
        return self


class GameConfig(_Section):
    tick_rate: float = Field(20.0, gt=0, le=1000)
    rules: RulesConfig = RulesConfig()
    start_room: str = "town"


class MobConfig(_Section):
    id: int = Field(ge=0)
    kind: str = "slime"
    x: float
    y: float
    hp: int = Field(100, ge=1)
    xp: int = Field(10, ge=0)


class RoomConfig(_Section):
    """A configured room.

    ``type`` is the room type: ``"module:Class"`` (imported at start-up) or, in programmatic use, the
    class itself; without it the room is the built-in game, whose size and mobs are the fields below
    (explicit ``mobs`` and/or ``mob_count`` mobs laid out on a grid, deterministically). ``options`` is
    the room type's own table (``Room.options``). ``max_players`` limits the seats of one instance.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Any = Field(None, description='"module:Class" of a gameserver.rooms.Room subclass; '
                                        'None: the built-in game')
    options: dict[str, Any] = Field(default_factory=dict)
    max_players: int | None = Field(None, ge=1, le=1_000_000)
    tick_rate: float | None = Field(None, gt=0, le=1000, description="None: the type's, else [game]")
    idle_dispose: float = Field(30.0, ge=0, description="an empty instance other than the first is "
                                "disposed after this many seconds (kept while a seat is held)")
    width: float = Field(1000.0, gt=0)
    height: float = Field(1000.0, gt=0)
    mobs: tuple[MobConfig, ...] = ()
    mob_count: int = Field(0, ge=0, le=100_000)
    mob_kind: str = "slime"
    mob_hp: int = Field(100, ge=1)
    mob_xp: int = Field(10, ge=0)

    @model_validator(mode="after")
    def _type_shape(self) -> RoomConfig:
        room = f"room {self.name}"
        if self.type is not None and not isinstance(self.type, str | type):
            raise ValueError(f'{room}: type must be "module:Class" or a Room subclass')
        if isinstance(self.type, str) and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.type):
            raise ValueError(f'{room}: type {self.type!r} is not of the form "module:Class"')
        builtin_fields = {"width", "height", "mobs", "mob_count", "mob_kind", "mob_hp", "mob_xp"}
        if self.type is not None and builtin_fields & self.model_fields_set:
            used = sorted(builtin_fields & self.model_fields_set)
            raise ValueError(f"{room}: {', '.join(used)}: only for the built-in game; put a room type's "
                             "settings in [rooms.options]")
        if self.type is None and self.options:
            raise ValueError(f"{room}: options: only for rooms with a type (the built-in game takes width, "
                             "height, mobs, mob_count ...)")
        return self

    @property
    def builtin(self) -> bool:
        return self.type is None

    def all_mobs(self) -> list[MobConfig]:
        """Explicit mobs plus ``mob_count`` generated ones on a regular grid inside the bounds."""
        mobs = list(self.mobs)
        next_id = max((m.id for m in mobs), default=0) + 1
        if self.mob_count:
            cols = max(1, math.ceil(math.sqrt(self.mob_count)))
            rows = math.ceil(self.mob_count / cols)
            for i in range(self.mob_count):
                c, r = i % cols, i // cols
                mobs.append(MobConfig(
                    id=next_id + i, kind=self.mob_kind, hp=self.mob_hp, xp=self.mob_xp,
                    x=self.width * (c + 0.5) / cols, y=self.height * (r + 0.5) / rows,
                ))
        return mobs


DEFAULT_ROOM_NAMES = ("town", "forest", "dungeon")


class StoreConfig(_Section):
    """Where characters live. ``url`` wins; else the embedded file store in ``data_dir``."""

    url: str | None = None
    data_dir: str = "./data"
    durability: Literal["fsync", "flush", "memory"] = "fsync"
    namespace: str = "game"
    set: str = "characters"

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        path = Path(self.data_dir).expanduser().resolve()
        return f"file://{path}?durability={self.durability}"


class PersistConfig(_Section):
    """Write-behind and XP grants (``gameserver/grants.py``: which errors are retried, and for how long)."""

    flush_interval: float = Field(2.0, gt=0, description="write-behind period for position/room/kills")
    grant_retry_for: float = Field(30.0, ge=0, description="seconds one XP grant keeps retrying while the "
                                   "store fails (outlasts a Redis failover, ~3 s, and a short restart); "
                                   "then error internal")
    grant_backoff: float = Field(0.05, gt=0, description="first retry delay; doubled per retry up to "
                                 "grant_backoff_max, each delay jittered (half of it to all of it)")
    grant_backoff_max: float = Field(1.0, gt=0, description="longest delay between two tries of a grant")
    grant_pending_max: int = Field(10_000, ge=1, description="grants not yet stored at once (memory bound); "
                                   "a grant beyond it gets error internal at once")
    recent_grants: int = Field(64, ge=1, description="grant ids kept per character for idempotency")
    cas_retries: int = Field(16, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "grant_retries" in data:
            raise ValueError("persist.grant_retries was replaced by persist.grant_retry_for (seconds a "
                             "grant keeps retrying)")
        return data

    @model_validator(mode="after")
    def _backoff_capped(self) -> PersistConfig:
        if self.grant_backoff > self.grant_backoff_max:
            raise ValueError("persist.grant_backoff must be at most persist.grant_backoff_max")
        return self


class ReplayConfig(_Section):
    """What a session keeps for a ``resume`` with ``seq`` to replay (gameserver.replay); the oldest goes
    first when any bound is reached, and a resume that needs it answers ``recovered: false``."""

    max_messages: int = Field(256, ge=0, description="numbered messages kept per session (0: none)")
    max_bytes: int = Field(64 * 1024, ge=0, description="encoded bytes of the kept messages per session")
    max_age: float | None = Field(None, gt=0, description="seconds a message is kept; None: "
                                  "auth.grace_seconds + limits.idle_timeout (a drop the server noticed "
                                  "only by the idle timeout, then the whole grace period)")

    def limits(self, grace: float, idle: float) -> Any:
        """The ``gameserver.replay.ReplayLimits`` of these settings."""
        from .replay import ReplayLimits

        age = self.max_age if self.max_age is not None else grace + idle
        return ReplayLimits(self.max_messages, self.max_bytes, age)


class ClusterConfig(_Section):
    """Several nodes sharing one Redis (docs/scale-out.md). Absent: one node, nothing shared."""

    node_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="unique per node; default host-pid-random")
    public_url: str | None = Field(None, description="ws URL other nodes redirect players to; "
                                                     "default ws://HOST:PORT/ws as bound")
    redis_url: str | None = Field(None, description="presence, pub/sub, leases; None: in-process only")
    prefix: str = Field("gs", min_length=1, max_length=32, description="Redis key prefix")
    lease_ttl: float = Field(5.0, gt=0, description="room lease expiry after the last renewal, seconds")
    renew_interval: float = Field(1.5, gt=0, description="lease renewal and presence heartbeat period")
    idle_release: float = Field(30.0, gt=0, description="release a room's lease after this long empty")
    handoff_timeout: float = Field(2.0, gt=0, description="wait for another node to hand a session over")
    rooms: tuple[str, ...] = Field((), description="home rooms: claimed at start-up and whenever free, "
                                                   "never released when idle")

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> ClusterConfig:
        if self.renew_interval * 2 > self.lease_ttl:
            raise ValueError("cluster.renew_interval must be at most half of cluster.lease_ttl")
        return self


class ServerConfig(_Section):
    """Root configuration object."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "kv"] = "json"
    admin_token: str | None = None
    static_dir: str | None = None
    use_uvloop: bool = True
    limits: LimitsConfig = LimitsConfig()
    auth: AuthConfig = AuthConfig()
    game: GameConfig = GameConfig()
    rooms: tuple[RoomConfig, ...] = Field((), description="empty: the default world (gameserver.game.world)")
    store: StoreConfig = StoreConfig()
    persist: PersistConfig = PersistConfig()
    replay: ReplayConfig = ReplayConfig()
    cluster: ClusterConfig | None = None

    @model_validator(mode="after")
    def _cluster_shares_token_secret(self) -> ServerConfig:
        if self.cluster is not None and self.auth.token_secret is None:
            raise ValueError("cluster needs auth.token_secret (the same on every node) so resume tokens "
                             "work across nodes")
        return self

    @model_validator(mode="after")
    def _rooms_valid(self) -> ServerConfig:
        names = [r.name for r in self.rooms] or list(DEFAULT_ROOM_NAMES)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate room names: {names}")
        if self.game.start_room not in names:
            raise ValueError(f"game.start_room {self.game.start_room!r} is not a configured room")
        unknown = [r for r in (self.cluster.rooms if self.cluster else ()) if r not in names]
        if unknown:
            raise ValueError(f"cluster.rooms names unknown rooms: {unknown}")
        for room in self.rooms:
            if not room.builtin:
                continue
            ids = [m.id for m in room.all_mobs()]
            if len(set(ids)) != len(ids):
                raise ValueError(f"room {room.name}: duplicate mob ids")
            too_strong = [m.id for m in room.all_mobs() if m.hp > 20 * self.game.rules.dmg_min]
            if too_strong:
                raise ValueError(f"room {room.name}: mobs {too_strong[:5]} have hp > 20 * dmg_min")
        return self

    def room_specs(self) -> list[Any]:
        """``RoomSpec`` of every built-in room (the game's default world when no room is configured)."""
        from .game.world import MobSpec, RoomSpec, default_rooms

        if not self.rooms:
            return default_rooms()
        return [
            RoomSpec(r.name, r.width, r.height, tuple(
                MobSpec(id=mob.id, kind=mob.kind, x=mob.x, y=mob.y, hp=mob.hp, xp=mob.xp)
                for mob in r.all_mobs()))
            for r in self.rooms if r.builtin
        ]

    def room_configs(self) -> tuple[RoomConfig, ...]:
        """Every configured room; the default world (built-in rooms) when none is configured."""
        if self.rooms:
            return self.rooms
        return tuple(RoomConfig(name=name) for name in DEFAULT_ROOM_NAMES)

    def rules(self) -> Any:
        from .game.rules import Rules

        return Rules(**self.game.rules.model_dump())


# ---------------------------------------------------------------------------------------------- loading

_SHORTCUTS = {
    "HOST": ("host",),
    "PORT": ("port",),
    "LOG_LEVEL": ("log_level",),
    "LOG_FORMAT": ("log_format",),
    "ADMIN_TOKEN": ("admin_token",),
    "STATIC_DIR": ("static_dir",),
    "DATA": ("store", "data_dir"),
    "STORE": ("store", "url"),
    "DURABILITY": ("store", "durability"),
    "TOKEN_SECRET": ("auth", "token_secret"),
    "TICK_RATE": ("game", "tick_rate"),
}


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _env_value(raw: str) -> Any:
    """Env values may be JSON (numbers, lists, objects); anything else is a plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``GAMESERVER_*`` variables into a nested override dict (``CONFIG`` itself is skipped)."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):]
        if key == "CONFIG" or not key:
            continue
        path = _SHORTCUTS.get(key) or tuple(p.lower() for p in key.split("__"))
        value: Any = raw if path[-1] in ("token_secret", "admin_token", "host") else _env_value(raw)
        _set_path(out, path, value)
    return out


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def build_config(data: Mapping[str, Any]) -> ServerConfig:
    """Validate a plain dict; raises ConfigError with one line per problem."""
    try:
        return ServerConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Defaults < TOML file < env < overrides (CLI flags). ``path`` falls back to ``GAMESERVER_CONFIG``."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = deep_merge(data, env_overrides(environ))
    if overrides:
        data = deep_merge(data, overrides)
    return build_config(data)
