"""Store URLs: every scheme's location and options are parsed here, in one place; then a backend opens it.

- ``memory://``: options ``max_record_bytes``, ``sweep_interval``.
- ``file:///abs/dir`` or ``file://./rel/dir``: options ``durability`` (fsync, flush, memory),
  ``max_record_bytes``, ``segment_bytes``, ``fsync_interval``, ``sweep_interval``, ``compact_interval``,
  ``compact_threshold``.
- ``redis://[user:pw@]host:port/db``, ``rediss://`` (TLS), ``redis+cluster://host:port`` (any node):
  options ``max_record_bytes``, ``socket_timeout``, ``socket_connect_timeout``, ``max_connections``,
  ``replicas``, ``replica_timeout``.

Anything not understood (scheme, host, port, database, option name, value, an option given twice) raises
``InvalidURLError`` (code ``bad_url``) with a one-line message naming the part and the bad value (an
unknown option's message lists the known ones); a password never appears in a message.
``parse_store_url`` does all of it without opening anything (start-up validation);
``open_store`` parses, then opens the backend from a table.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from .base import Store
from .engine import Engine, Options
from .errors import InvalidURLError
from .logstore import DURABILITIES

DEFAULT_MAX_CONNECTIONS = 256  # Redis commands in flight per store (cluster: at most this many per node too)


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to reach Redis, from a ``redis://``, ``rediss://`` or ``redis+cluster://`` URL."""

    cluster: bool
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    max_record_bytes: int = Options.max_record_bytes
    socket_timeout: float | None = None  # seconds per socket read/write; None = wait forever
    socket_connect_timeout: float | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    replicas: int = 0  # a write is acknowledged once this many replicas confirmed it (WAIT)
    replica_timeout: float = 1.0  # seconds WAIT waits for them

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class _Opt:
    """How one option's value is read: a number within bounds, or one of some words."""

    kind: type
    minimum: float = 0.0
    exclusive: bool = False  # value must be > minimum (else >= minimum)
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def parse(self, raw: str) -> Any:
        """The value, or ValueError saying what a good value looks like."""
        if self.choices:
            if raw not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}")
            return raw
        if self.kind is int:
            want = "an integer"
            ok = re.fullmatch(r"-?[0-9]+", raw) is not None
            value: Any = int(raw) if ok else None
        else:
            want = "a number"
            try:
                value = float(raw) if re.fullmatch(r"[-+.0-9eE]+", raw) else None
            except ValueError:
                value = None
            ok = value is not None and math.isfinite(value)
        bound = f"> {self.minimum:g}" if self.exclusive else f">= {self.minimum:g}"
        if self.maximum is not None:
            bound += f" and <= {self.maximum:g}"
        if not ok or value < self.minimum or (self.exclusive and value == self.minimum) or (
                self.maximum is not None and value > self.maximum):
            raise ValueError(f"must be {want} {bound}")
        return value


_SIZE = _Opt(int, 1)
_PERIOD = _Opt(float, 0)  # seconds; 0 disables the background task
_TIMEOUT = _Opt(float, 0.001)

MEMORY_OPTIONS: dict[str, _Opt] = {"max_record_bytes": _SIZE, "sweep_interval": _PERIOD}
FILE_OPTIONS: dict[str, _Opt] = {
    "durability": _Opt(str, choices=DURABILITIES),
    "max_record_bytes": _SIZE,
    "segment_bytes": _Opt(int, 4096),
    "fsync_interval": _Opt(float, 0, exclusive=True),
    "sweep_interval": _PERIOD,
    "compact_interval": _PERIOD,
    "compact_threshold": _Opt(float, 0, maximum=1),
}
REDIS_OPTIONS: dict[str, _Opt] = {
    "max_record_bytes": _SIZE,
    "socket_timeout": _TIMEOUT,
    "socket_connect_timeout": _TIMEOUT,
    "max_connections": _Opt(int, 1),
    "replicas": _Opt(int, 0, maximum=64),
    "replica_timeout": _TIMEOUT,
}
SCHEME_OPTIONS: dict[str, dict[str, _Opt]] = {
    "memory": MEMORY_OPTIONS,
    "file": FILE_OPTIONS,
    "redis": REDIS_OPTIONS,
    "rediss": REDIS_OPTIONS,
    "redis+cluster": REDIS_OPTIONS,
}


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: its scheme, the options given (parsed) and where the data lives."""

    scheme: str
    options: dict[str, Any]
    directory: str | None = None  # file://
    redis: RedisTarget | None = None  # redis schemes

    def engine_options(self) -> Options:
        """The embedded engine's options (defaults for every option not given)."""
        return Options(**self.options)


def shown(url: str) -> str:
    """The URL as it may appear in a message: password replaced, at most 200 characters, repr-quoted."""
    text = re.sub(r"(//[^/@?#]*?:)[^/@?#]*@", r"\1***@", url) if isinstance(url, str) else str(url)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _value(raw: str) -> str:
    return repr(raw if len(raw) <= 80 else raw[:80] + "...")


def _options(scheme: str, query: str) -> dict[str, Any]:
    allowed = SCHEME_OPTIONS[scheme]
    out: dict[str, Any] = {}
    raw_of: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        name, eq, raw = piece.partition("=")
        name, raw = unquote_plus(name), unquote_plus(raw)
        if name not in allowed:
            raise InvalidURLError(
                f"unknown store option {_value(name)} (value {_value(raw)}) for {scheme}:// "
                f"(known: {', '.join(sorted(allowed))})", option=name)
        if not eq:
            raise InvalidURLError(f"store option {name!r} of {scheme}:// needs a value ({name}=...)",
                                  option=name)
        if name in out:
            raise InvalidURLError(f"store option {name!r} given twice ({_value(raw_of[name])} and "
                                  f"{_value(raw)})", option=name)
        try:
            out[name] = allowed[name].parse(raw)
        except ValueError as exc:
            raise InvalidURLError(f"bad value {_value(raw)} for store option {name!r} of {scheme}://: {exc}",
                                  option=name) from None
        raw_of[name] = raw
    return out


def file_directory(url: str) -> str:
    """The directory of a ``file://`` URL: absolute, or relative to the cwd with ``file://./rel``."""
    parts = urlsplit(url)
    host, path = parts.netloc, unquote(parts.path)
    if host in (".", ".."):
        directory = host + path
    elif host in ("", "localhost"):
        directory = path
    else:
        raise InvalidURLError(f"file URL must be file:///absolute/dir or file://./relative/dir, "
                              f"got host {host!r} in {shown(url)}")
    if not directory or directory == "/":
        raise InvalidURLError(f"file URL needs a directory: {shown(url)}")
    return os.path.abspath(directory)


def _redis_target(url: str, scheme: str, options: dict[str, Any]) -> RedisTarget:
    parts = urlsplit(url)
    cluster = scheme == "redis+cluster"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise InvalidURLError(f"bad port {port_text!r} in store URL {shown(url)}: must be 1-65535")
    path = parts.path.strip("/")
    if not re.fullmatch(r"[0-9]{0,5}", path):
        raise InvalidURLError(f"bad redis database {path!r} in store URL {shown(url)}: must be a number")
    db = int(path) if path else 0
    if cluster and db != 0:
        raise InvalidURLError(f"bad redis database {path!r} in store URL {shown(url)}: "
                              "a redis cluster has only database 0")
    timeout = options.get("socket_timeout")
    wait = options.get("replica_timeout", RedisTarget.replica_timeout)
    if options.get("replicas", 0) > 0 and timeout is not None and timeout <= wait:
        raise InvalidURLError(f"bad value '{timeout:g}' for store option 'socket_timeout' of {scheme}://: "
                              f"must be above replica_timeout ({wait:g}), or every WAIT would time out first",
                              option="socket_timeout")
    return RedisTarget(
        cluster=cluster, host=parts.hostname or "127.0.0.1", port=port or 6379, db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=scheme == "rediss", **options)


def parse_store_url(url: str) -> StoreURL:
    """Parse and check a store URL completely, opening nothing; ``InvalidURLError`` names what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURLError(f"store URL must look like scheme://..., got {shown(url)}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEME_OPTIONS:
        raise InvalidURLError(f"unknown store scheme {scheme!r} in {shown(url)} "
                              f"(known: {', '.join(SCHEME_OPTIONS)})")
    parts = urlsplit(url)
    if parts.fragment:
        raise InvalidURLError(f"store URL takes no #fragment: {shown(url)}")
    options = _options(scheme, parts.query)
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise InvalidURLError(f"memory:// takes no host or path: {shown(url)}")
        return StoreURL(scheme, options)
    if scheme == "file":
        return StoreURL(scheme, options, directory=file_directory(url))
    return StoreURL(scheme, options, redis=_redis_target(url, scheme, options))


async def _open_memory(parsed: StoreURL) -> Store:
    return await Engine.open(None, parsed.engine_options())


async def _open_file(parsed: StoreURL) -> Store:
    return await Engine.open(parsed.directory, parsed.engine_options())


async def _open_redis(parsed: StoreURL) -> Store:
    try:
        mod = importlib.import_module("datastore.redis_store")
    except ImportError as exc:
        raise InvalidURLError(f"the redis backend is not available (pip install redis): {exc}") from None
    assert parsed.redis is not None
    return await mod.open_target(parsed.redis)


BACKENDS: dict[str, Callable[[StoreURL], Awaitable[Store]]] = {
    "memory": _open_memory,
    "file": _open_file,
    "redis": _open_redis,
    "rediss": _open_redis,
    "redis+cluster": _open_redis,
}
async def open_store(url: str) -> Store:
    """Open the store a URL names (``memory://``, ``file:///dir?durability=fsync``, ``redis://...``)."""
    parsed = parse_store_url(url)
    return await BACKENDS[parsed.scheme](parsed)
