"""``open_store(url)``: parse the URL, pick the backend from a table.

- ``memory://`` : in-process only, nothing persisted.
- ``file:///abs/dir`` (or ``file://./relative/dir``) : the embedded log-structured store.
- ``redis://...`` : the Redis backend (``datastore.redis_store``), when installed.

Query options (all optional): ``durability=fsync|flush|memory`` (file only, default fsync),
``max_record_bytes`` (default 131072), and engine tuning: ``segment_bytes``, ``fsync_interval``,
``sweep_interval``, ``compact_interval``, ``compact_threshold`` (see ``engine.Options``).
Unknown schemes and options raise ``InvalidURLError`` (code ``bad_url``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import Store
from .engine import Engine, Options
from .errors import InvalidURLError
from .logstore import DURABILITIES

_INT_OPTIONS = {"max_record_bytes": 1, "segment_bytes": 4096}  # option -> minimum
_FLOAT_OPTIONS = {"fsync_interval", "sweep_interval", "compact_interval", "compact_threshold"}


def _options(query: str, allowed: set[str]) -> Options:
    opts = Options()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise InvalidURLError(f"unknown store option {name!r} (known: {', '.join(sorted(allowed))})")
        try:
            if name == "durability":
                if value not in DURABILITIES:
                    raise ValueError(f"must be one of {DURABILITIES}")
                parsed: Any = value
            elif name in _INT_OPTIONS:
                parsed = int(value)
                if parsed < _INT_OPTIONS[name]:
                    raise ValueError(f"must be >= {_INT_OPTIONS[name]}")
            else:
                parsed = float(value)
                if parsed < 0:
                    raise ValueError("must be >= 0")
        except ValueError as exc:
            raise InvalidURLError(f"bad value {value!r} for store option {name!r}: {exc}") from None
        setattr(opts, name, parsed)
    return opts


_ALL = {f.name for f in dataclasses.fields(Options)}


async def _open_memory(url: str) -> Store:
    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/"):
        raise InvalidURLError(f"memory:// takes no host or path: {url!r}")
    opts = _options(parts.query, {"max_record_bytes", "sweep_interval"})
    return await Engine.open(None, opts)


def file_directory(url: str) -> str:
    """The directory of a ``file://`` URL: absolute, or relative to the cwd with ``file://./rel``."""
    parts = urlsplit(url)
    host, path = parts.netloc, unquote(parts.path)
    if host in (".", ".."):
        directory = host + path
    elif host in ("", "localhost"):
        directory = path
    else:
        raise InvalidURLError(f"file URL must be file:///absolute/dir or file://./relative/dir, got {url!r}")
    if not directory or directory == "/":
        raise InvalidURLError(f"file URL needs a directory: {url!r}")
    return os.path.abspath(directory)


async def _open_file(url: str) -> Store:
    opts = _options(urlsplit(url).query, _ALL)
    return await Engine.open(file_directory(url), opts)


async def _open_redis(url: str) -> Store:
    try:
        mod = importlib.import_module("datastore.redis_store")
    except ImportError as exc:
        raise InvalidURLError(f"the redis backend is not available: {exc}") from None
    return await mod.open_redis(url)


BACKENDS: dict[str, Callable[[str], Awaitable[Store]]] = {
    "memory": _open_memory,
    "file": _open_file,
    "redis": _open_redis,
    "rediss": _open_redis,
    "redis+cluster": _open_redis,
}


async def open_store(url: str) -> Store:
    """Open the store a URL names (``memory://``, ``file:///dir?durability=fsync``, ``redis://...``)."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURLError(f"store URL must look like scheme://..., got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    opener = BACKENDS.get(scheme)
    if opener is None:
        raise InvalidURLError(f"unknown store scheme {scheme!r} (known: {', '.join(BACKENDS)})")
    return await opener(url)
