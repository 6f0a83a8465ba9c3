"""HTTP side of the web client and the monitor: static files, the stats snapshot and the admin token check.

No sockets here and no server object: ``WebUI`` maps a request path to a response tuple ``(status,
content_type, body)`` from what it is given (admin token, static directory, a ``StatsSource``);
``gameserver.transport`` turns tuples into HTTP responses.

    GET /, /index.html        -> static/index.html   (the game client)
    GET /monitor              -> static/monitor.html (the live monitor)
    GET /static/<file>        -> static/<file>       (flat directory, safe names only)
    GET /api/stats            -> stats_snapshot(source) as JSON, admin token required
                                 (``Authorization: Bearer <token>`` or ``?token=<token>``)
    anything else             -> None (the transport answers it: /ws upgrade, /health, /metrics, 404)
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "STATIC_DIR",
    "Response",
    "StatsSource",
    "WebUI",
    "check_admin_token",
    "static_response",
    "stats_response",
    "stats_snapshot",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"

Response = tuple[int, str, bytes]
"""(HTTP status, content type, body)."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",   # module scripts need a JavaScript MIME type
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/monitor": "monitor.html",
    "/monitor/": "monitor.html",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_NOT_FOUND: Response = (404, "text/plain; charset=utf-8", b"not found\n")


# ------------------------------------------------------------------------------------------- static files

def static_response(path: str, root: Path | None = None) -> Response | None:
    """The response for a static page or file, or None when ``path`` is not a static route.

    ``path`` is the request target (a query string is ignored). Only plain file names directly inside
    ``root`` (default: ``gameserver/static``) are served, with a known extension: no subdirectories, no
    dot files, no ``..``, no encoded slashes. A static route naming a missing or unsafe file gives 404.
    """
    root = (root or STATIC_DIR).resolve()
    route = urlsplit(path).path
    if route in PAGES:
        name = PAGES[route]
    elif route.startswith("/static/"):
        name = unquote(route[len("/static/"):])
    else:
        return None
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        return _NOT_FOUND
    content_type = CONTENT_TYPES.get(Path(name).suffix.lower())
    file = (root / name).resolve()
    if content_type is None or file.parent != root or not file.is_file():
        return _NOT_FOUND
    try:
        return 200, content_type, file.read_bytes()
    except OSError:
        return _NOT_FOUND


# -------------------------------------------------------------------------------------------- admin token

def check_admin_token(given: str | None, configured: str | None) -> bool:
    """True when ``given`` equals the configured admin token, compared in constant time.

    No configured token (None or empty) means the monitor is disabled: every token is refused.
    """
    if not configured or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), configured.encode("utf-8"))


def _token_from(path: str, authorization: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def _json(status: int, body: Any) -> Response:
    return status, "application/json", json.dumps(body, separators=(",", ":")).encode()


def stats_response(source: StatsSource, path: str, authorization: str | None,
                   admin_token: str | None) -> Response:
    """``/api/stats``: 403 when no admin token is configured, 401 for a missing or wrong token, else 200."""
    if not admin_token:
        return _json(403, {"error": "monitor disabled: no admin_token configured"})
    if not check_admin_token(_token_from(path, authorization), admin_token):
        return _json(401, {"error": "unauthorized: missing or wrong admin token"})
    return _json(200, stats_snapshot(source))


@dataclass
class StatsSource:
    """What the monitor reads: the prometheus registry, start time (monotonic), and callables giving the
    rooms (``(name, {"players": n, ...Room.describe()})`` in configuration order) and the session count."""

    registry: Any = None
    started_at: float | None = None
    rooms: Callable[[], list[tuple[str, dict[str, Any]]]] = list
    sessions: Callable[[], int | None] = lambda: None
    tracker: _RateTracker = field(default_factory=lambda: _RateTracker())


class WebUI:
    """The transport's ``pages`` hook: web client, monitor and ``/api/stats``."""

    def __init__(self, source: StatsSource, admin_token: str | None = None,
                 static_dir: str | None = None) -> None:
        self.source = source
        self.admin_token = admin_token
        self.static_dir = Path(static_dir) if static_dir else None

    def __call__(self, path: str, headers: Mapping[str, str] | None = None) -> Response | None:
        """The response for ``path`` or None when it is not ours. ``headers`` needs only ``.get(name)``
        (websockets' ``Headers`` is case-insensitive; for a plain dict both spellings are tried)."""
        if urlsplit(path).path == "/api/stats":
            auth = None
            if headers is not None:
                auth = headers.get("Authorization") or headers.get("authorization")
            return stats_response(self.source, path, auth, self.admin_token)
        return static_response(path, self.static_dir)


# ------------------------------------------------------------------------------------------ stats snapshot

def stats_snapshot(source: StatsSource) -> dict[str, Any]:
    """A JSON-ready picture of the server for the monitor page (``/api/stats``).

    Keys (numbers may be None when the source does not have them):

    - ``ts``: server wall-clock time of the snapshot, Unix seconds.
    - ``uptime_s``: seconds since the server started.
    - ``sessions``: live sessions (attached or in their reconnect grace).
    - ``connections``: open websocket connections.
    - ``players``: players currently in a room, all rooms together.
    - ``rooms``: one entry per room, in configuration order: ``{"name", "players", "tick_ms",
      "tick_lag_ms", ...}`` plus what the room type's ``describe`` adds (the built-in game: ``mobs_alive``);
      ``tick_ms`` is the mean work per tick over the last interval (milliseconds), ``tick_lag_ms`` how late
      the last tick started; ``room`` is the configured room an instance belongs to.
    - ``instances``: instances run here per configured room (``{"arena": 3}``).
    - ``messages_in_per_s`` / ``messages_out_per_s``: client / server messages per second over the last
      interval (about a second; the first snapshot averages since start-up);
      ``messages_in_total`` / ``messages_out_total``: counters since start-up.
    - ``datastore``: ``{"ops_per_s", "ops_total", "cas_retries", "cas_retries_per_s"}``; ``cas_retries``
      counts compare-and-set attempts beyond the first since start-up.
    """
    now = time.time()
    samples = _metric_samples(source.registry)
    totals = {
        "in": _sum(samples, "gameserver_messages_in_total"),
        "out": _sum(samples, "gameserver_messages_out_total"),
        "ops": _sum(samples, "gameserver_datastore_op_seconds_count"),
        "cas": _sum(samples, "gameserver_cas_retries_total"),
    }
    for room, value in _by_room(samples, "gameserver_tick_duration_seconds_sum").items():
        totals[f"tick_sum:{room}"] = value
    for room, value in _by_room(samples, "gameserver_tick_duration_seconds_count").items():
        totals[f"tick_count:{room}"] = value
    started = source.started_at
    rates = source.tracker.update(time.monotonic(), totals, started)
    lags = _by_room(samples, "gameserver_tick_lag_seconds")

    rooms = []
    for name, stats in source.rooms():
        tick_sum, tick_count = rates.delta(f"tick_sum:{name}"), rates.delta(f"tick_count:{name}")
        tick_ms = round(1000 * tick_sum / tick_count, 3) if tick_sum is not None and tick_count else None
        entry: dict[str, Any] = {"name": name, "players": stats.get("players")}
        entry.update((k, v) for k, v in stats.items() if k not in ("name", "players"))
        entry["tick_ms"] = tick_ms
        entry["tick_lag_ms"] = round(1000 * lags[name], 3) if name in lags else None
        rooms.append(entry)
    players = [r["players"] for r in rooms if isinstance(r["players"], int)]
    instances: dict[str, int] = {}
    for r in rooms:
        kind = r.get("room", r["name"])
        instances[kind] = instances.get(kind, 0) + 1
    sessions = _sum(samples, "gameserver_sessions")
    return {
        "ts": now,
        "uptime_s": round(time.monotonic() - started, 1) if started is not None else None,
        "sessions": _int(sessions) if sessions is not None else source.sessions(),
        "connections": _int(_sum(samples, "gameserver_connections")),
        "players": sum(players) if players else None,
        "rooms": rooms,
        "instances": instances,
        "messages_in_per_s": rates.rate("in"),
        "messages_out_per_s": rates.rate("out"),
        "messages_in_total": _int(totals["in"]),
        "messages_out_total": _int(totals["out"]),
        "datastore": {
            "ops_per_s": rates.rate("ops"),
            "ops_total": _int(totals["ops"]),
            "cas_retries": _int(totals["cas"]),
            "cas_retries_per_s": rates.rate("cas"),
        },
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]


def _metric_samples(registry: Any) -> Samples:
    """All samples of a prometheus registry by sample name; {} when there is none."""
    out: Samples = {}
    if registry is None:
        return out
    try:
        for family in registry.collect():
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    except Exception:  # a half-started server must not break the monitor
        return {}
    return out


def _sum(samples: Samples, name: str) -> float | None:
    values = samples.get(name)
    return sum(v for _, v in values) if values else None


def _by_room(samples: Samples, name: str) -> dict[str, float]:
    return {labels["room"]: v for labels, v in samples.get(name, ()) if "room" in labels}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


# ------------------------------------------------------------------------------------------------- rates

@dataclass
class _Rates:
    deltas: dict[str, float | None]
    seconds: float

    def delta(self, key: str) -> float | None:
        return self.deltas.get(key)

    def rate(self, key: str) -> float | None:
        d = self.deltas.get(key)
        if d is None or self.seconds <= 0:
            return None
        return round(d / self.seconds, 2)


class _RateTracker:
    """Recent counter samples of one server; rates are taken against a sample about a second old, so that
    several monitor pages polling at once still see per-second rates rather than noise."""

    WINDOW = 1.0

    def __init__(self) -> None:
        self.history: deque[tuple[float, dict[str, float | None]]] = deque(maxlen=32)

    def update(self, now: float, totals: dict[str, float | None], started: float | None) -> _Rates:
        base = None
        for t, values in reversed(self.history):
            if now - t >= self.WINDOW:
                base = (t, values)
                break
        if base is None:
            if self.history:
                base = self.history[0]
            elif started is not None and now > started:
                base = (started, {})   # first snapshot: average since start-up
        if not self.history or now - self.history[-1][0] >= self.WINDOW / 2:
            self.history.append((now, totals))
        if base is None:  # no reference yet: totals as deltas give since-start means, rates stay None
            return _Rates(dict(totals), 0.0)
        t0, old = base
        deltas = {
            key: (value - (old.get(key) or 0.0)) if value is not None else None
            for key, value in totals.items()
        }
        return _Rates(deltas, now - t0)
