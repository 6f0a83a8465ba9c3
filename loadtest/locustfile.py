"""Locust websocket player for the game server.

    locust -f loadtest/locustfile.py --host ws://127.0.0.1:8765 --headless -u 2000 -r 200 -t 60s \
        --processes -1 --profile casual --csv out/run

Each user holds one websocket (`loadtest.locust_client.WSClient`, gevent-friendly); one epoll reactor
greenlet per process (`loadtest.locust_client.Reactor`) reads every server message of every user.
Requests carry an integer `rid`; the reply with the same `rid` is reported to locust as request type
"WS" named after the request (`login`, `join`, `attack`, `me`, `top`, `ping`).
Every `tick` is reported as `tick_age` (receive time minus the tick's server `ts`, in ms); own `chat` echoes
as `chat` (send to echo). Outcomes of `attack` that are normal game play (`out_of_range`, `cooldown`,
`no_such_mob`) are successes of their own entries (`attack:out_of_range`, ...). Failures: `connect`
(refused / handshake), `error:<code>` for any other error reply, `timeout:<request>` for a reply that never
came, `bye:<reason>` and `closed:<code>` for sessions the server ended. A login the server refuses with
`busy` / `server_full` is its own success entry (`login:busy`, `login:server_full`): the user keeps its
socket, pings, and logs in again after the server's `retry_after` x 1.0-1.5 (`shared.retry`).

Resume: a dropped socket (closed without a `bye`) is resumed on a new one with the session's token and its
last `seq` (`resume`; `resume:bad_token` when the grace period was over, then a fresh login). Every message
the server replays counts as `replayed`, a `recovered: false` answer as `resume:unrecovered`; a `seq` seen
twice (`seq:duplicate`) or skipped without that announcement (`seq:gap`) is a failure.
`--drop-every S` (env GAME_DROP_EVERY) makes each user cut its own socket every ~S seconds (a TCP reset:
the server sees a drop), to exercise exactly that; its own cuts count as `drop`, not as failures.

Options (also in the web UI): `--profile busy|casual` (locust's own option; or `--game-profile`, env
GAME_PROFILE), `--room forest` (env GAME_ROOM;
comma-separated list: each user picks one), `--ws-path /ws`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult
from locust import User, events, task

from loadtest.locust_client import Reactor, WSClient, WSClosed, tick_ts
from loadtest.profiles import PROFILES, Profile, secret_for, select_profile, unique_name
from shared.codec import decode_server, encode_raw
from shared.retry import REFUSAL_CODES, refusal_delay
from shared.seq import SeqTracker

NORMAL_ATTACK_ERRORS = frozenset({"out_of_range", "cooldown", "no_such_mob"})
REQUEST_TIMEOUT = 10.0
ATTACK_RANGE = 64.0
ATTACK_COOLDOWN = 0.3  # a bit over the server's 250 ms so a busy user rarely sees `cooldown`
SPEED = 300.0
RESPAWN_GUESS = 5.0



@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # locust itself owns `--profile` (a label grouping test runs): its value selects our profile when it
    # names one; `--game-profile` is the unambiguous spelling (and the one shown in the web UI).
    parser.add_argument(
        "--game-profile",
        choices=["", *sorted(PROFILES)],
        default=os.environ.get("GAME_PROFILE", ""),
        help="player behaviour profile: busy or casual (env GAME_PROFILE; locust's --profile works too)",
        include_in_web_ui=True,
    )
    parser.add_argument(
        "--room",
        default=os.environ.get("GAME_ROOM", "forest"),
        help="room to join, or a comma-separated list to spread users (env GAME_ROOM)",
        include_in_web_ui=True,
    )
    parser.add_argument("--ws-path", default=os.environ.get("GAME_WS_PATH", "/ws"), help="websocket path")
    parser.add_argument("--drop-every", type=float, default=float(os.environ.get("GAME_DROP_EVERY") or 0),
                        help="cut each user's socket every ~S seconds to exercise resume (0: never)")


class GamePlayer(User):
    """One simulated player: connect, login, join, then move / attack / chat / ping per its profile."""

    host = "ws://127.0.0.1:8765"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        self.profile: Profile = PROFILES[select_profile(opts)]
        rooms = (getattr(opts, "room", None) or os.environ.get("GAME_ROOM", "forest")).split(",")
        path = getattr(opts, "ws_path", None) or "/ws"
        host = (self.host or "ws://127.0.0.1:8765").rstrip("/")
        self.url = host if urlsplit(host).path not in ("", "/") else host + path  # --host may name the path
        self.name = unique_name()
        self.secret = secret_for(self.name)
        self.rng = random.Random(self.name)
        self.room = self.rng.choice([r.strip() for r in rooms if r.strip()])
        self.ws: WSClient | None = None
        self.rids = itertools.count(1)
        self.pending: dict[int, tuple[str, float, AsyncResult | None]] = {}
        self.ready = False
        self.stopping = False
        self.room_joined = AsyncResult()
        self.next_connect = 0.0
        self.connect_failures = 0
        self.refusals = 0  # busy / server_full answers in a row (reset once in)
        self.refused_for: float | None = None  # delay the last login refusal asked for
        # session: resumed after a drop with the last seq
        self.token: str | None = None
        self.session: str | None = None
        self.seq = SeqTracker()
        self.resumable = False  # the last socket dropped (no bye): resume rather than log in
        self.cutting = False  # the user cut its own socket (--drop-every)
        drop_every = float(getattr(opts, "drop_every", 0.0) or 0.0)
        self.drop_every = drop_every
        self.next_drop = time.monotonic() + self.rng.uniform(0.5, 1.5) * drop_every if drop_every else 0.0
        # world state
        self.you = -1
        self.x = self.y = 0.0
        self.bounds = (1000.0, 1000.0)
        self.mobs: dict[int, list[float]] = {}  # id -> [x, y, hp, dead_until]
        self.chat_sent: dict[str, float] = {}
        # behaviour state
        now = time.monotonic()
        p = self.profile
        self.walking = True
        self.phase_end = now
        self.hz = p.move_hz[0]
        self.target: tuple[float, float] | None = None
        self.target_mob = -1
        self.last_move = now
        self.next_attack = now
        self.next_chat = now + self.rng.uniform(0.2, 1.0) * p.chat_every
        self.next_ping = now + self.rng.uniform(0.0, 1.0) * p.ping_every
        self.next_me = now + self.rng.uniform(0.2, 1.0) * p.me_every
        self.next_top = now + self.rng.uniform(0.2, 1.0) * p.top_every
        self.wait = 0.1

    # -- locust hooks -------------------------------------------------------------------------------

    def wait_time(self) -> float:
        return self.wait

    def on_start(self) -> None:
        self._connect()

    def on_stop(self) -> None:
        self.stopping = True
        self._teardown()

    @task
    def play(self) -> None:
        """One behaviour step; sets `self.wait` to the time until the next one."""
        now = time.monotonic()
        if not self.ready:
            if now >= self.next_connect:
                if self.ws is not None and not self.ws.closed:   # refused earlier: same socket
                    self._enter()
                else:
                    self._connect()
            elif self.ws is not None and now >= self.next_ping:   # waiting out a refusal: stay alive
                self.next_ping = now + self.profile.ping_every
                self._send({"t": "ping"})
            self.wait = 0.5
            return
        self._expire_pending(now)
        if self.drop_every and now >= self.next_drop:
            self.next_drop = now + self.rng.uniform(0.5, 1.5) * self.drop_every
            self._cut()
            return
        p = self.profile
        if now >= self.phase_end:
            self._new_phase(now)
        if now >= self.next_ping:
            self.next_ping = now + p.ping_every
            self._request("ping", {"t": "ping"})
        if now >= self.next_chat:
            self.next_chat = now + p.chat_every * self.rng.uniform(0.8, 1.2)
            text = f"hi from {self.name} #{self.rng.randrange(1_000_000)}"
            self.chat_sent[text] = time.perf_counter()
            self._send({"t": "chat", "text": text})
        if now >= self.next_me:
            self.next_me = now + p.me_every
            self._request("me", {"t": "me"})
        if now >= self.next_top:
            self.next_top = now + p.top_every
            self._request("top", {"t": "top", "n": 10})
        if not self.walking:
            self.wait = 0.5
            return
        if p.attack:
            self._maybe_attack(now)
        self._step_move(now)
        self.wait = 1.0 / self.hz

    # -- behaviour ----------------------------------------------------------------------------------

    def _new_phase(self, now: float) -> None:
        p = self.profile
        self.walking = self.rng.random() < p.walk_fraction
        self.phase_end = now + self.rng.uniform(*p.phase_seconds)
        self.hz = self.rng.uniform(*p.move_hz)
        self.target_mob = -1
        self.target = None
        if self.walking and self.mobs and self.rng.random() < p.hunt_fraction:
            self.target_mob = self._nearest_mob(now)
        if self.target_mob < 0:
            w, h = self.bounds
            self.target = (self.rng.uniform(0, w), self.rng.uniform(0, h))

    def _nearest_mob(self, now: float) -> int:
        best, best_d = -1, math.inf
        for mid, (mx, my, _hp, dead_until) in self.mobs.items():
            if dead_until > now:
                continue
            d = (mx - self.x) ** 2 + (my - self.y) ** 2
            if d < best_d:
                best, best_d = mid, d
        return best

    def _maybe_attack(self, now: float) -> None:
        if now < self.next_attack:
            return
        for mid, (mx, my, _hp, dead_until) in self.mobs.items():
            if dead_until <= now and math.hypot(mx - self.x, my - self.y) <= ATTACK_RANGE - 8:
                self.next_attack = now + ATTACK_COOLDOWN
                self._request("attack", {"t": "attack", "mob": mid}, extra=mid)
                return

    def _step_move(self, now: float) -> None:
        if self.target_mob >= 0:
            mob = self.mobs.get(self.target_mob)
            if mob is None or mob[3] > now:
                self.target_mob = self._nearest_mob(now)
                mob = self.mobs.get(self.target_mob)
            if mob is None:
                self.target_mob = -1
                w, h = self.bounds
                self.target = (self.rng.uniform(0, w), self.rng.uniform(0, h))
                tx, ty = self.target
            else:
                # stop a little short of the mob: close enough to hit, spread around it
                tx, ty = mob[0] + self.rng.uniform(-20, 20), mob[1] + self.rng.uniform(-20, 20)
        else:
            if self.target is None:
                w, h = self.bounds
                self.target = (self.rng.uniform(0, w), self.rng.uniform(0, h))
            tx, ty = self.target
        dt = min(1.0, now - self.last_move)
        self.last_move = now
        dx, dy = tx - self.x, ty - self.y
        dist = math.hypot(dx, dy)
        step = SPEED * dt * 0.9
        if dist < 1.0:
            if self.target_mob < 0:
                w, h = self.bounds
                self.target = (self.rng.uniform(0, w), self.rng.uniform(0, h))
            return
        if dist > step:
            tx, ty = self.x + dx * step / dist, self.y + dy * step / dist
        w, h = self.bounds
        self.x, self.y = min(max(tx, 0.0), w), min(max(ty, 0.0), h)
        self._send({"t": "move", "x": round(self.x, 1), "y": round(self.y, 1)})

    # -- connection ---------------------------------------------------------------------------------

    def _fire(self, name: str, ms: float, length: int = 0, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=ms, response_length=length, exception=exc, context={}
        )

    def _cut(self) -> None:
        """Reset our own TCP connection (no close frame: the server sees a dropped socket)."""
        ws = self.ws
        if ws is None:
            return
        self.cutting = True
        with contextlib.suppress(OSError):
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        Reactor.get().unregister(ws)
        self._on_closed(ws, WSClosed(1006, "cut by the user"))
        self.ws = None
        ws.closed = True
        with contextlib.suppress(OSError):
            ws.sock.close()

    def _resume(self) -> bool:
        """After a drop: resume with the token and last seq; False when the server refused it."""
        t0 = time.perf_counter()
        welcome = self._call("resume", {"t": "resume", "token": self.token, "seq": self.seq.last})
        if welcome is None or welcome.get("t") != "welcome":
            return False
        if welcome.get("recovered") is False:
            self._fire("resume:unrecovered", (time.perf_counter() - t0) * 1000)
        return True

    def _connect(self) -> None:
        """Connect, resume (after a drop) or log in, and join; on any failure report it and retry later from
        `play`."""
        self._teardown()
        # exponential backoff with jitter: an overloaded server must not face a synchronized retry storm
        backoff = min(30.0, 1.0 * 2 ** min(self.connect_failures, 5))
        self.next_connect = time.monotonic() + self.rng.uniform(0.5, 1.0) * backoff
        self.connect_failures += 1
        t0 = time.perf_counter()
        try:
            ws = WSClient.connect(self.url, timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            self._fire("connect", (time.perf_counter() - t0) * 1000, 0, exc)
            return
        self._fire("connect", (time.perf_counter() - t0) * 1000)
        self.ws = ws
        self.stopping = False
        Reactor.get().register(ws, self._on_frame, lambda exc, ws=ws: self._on_closed(ws, exc))
        self._enter()

    def _enter(self) -> None:
        """Login and join on the open socket. A busy / server_full refusal keeps the socket and comes back
        after the server's `retry_after` x 1.0-1.5 (`login:busy` / `login:server_full`: not failures)."""
        self.room_joined = AsyncResult()
        self.refused_for = None
        resumed = self.resumable and self.token is not None and self._resume()
        self.resumable = False
        if not resumed:
            if self.ws is None:   # the resume's socket closed under it
                return
            welcome = self._call("login", {"t": "login", "name": self.name, "secret": self.secret})
            if welcome is None:
                if self.refused_for is not None:   # refused for now: keep the socket, come back later
                    self.connect_failures = 0
                    self.next_connect = time.monotonic() + self.refused_for
                    self.next_ping = time.monotonic() + self.profile.ping_every
                    return
                self._teardown()
                return
        # the protocol sends `joined` (no rid) right after `welcome`: wait for it, so that our own join
        # is not raced by the server's placement into the character's saved room
        try:
            self.room_joined.get(timeout=REQUEST_TIMEOUT)
        except gevent.Timeout:
            self._fire("timeout:joined_after_welcome", REQUEST_TIMEOUT * 1000, 0,
                       TimeoutError("no joined after welcome"))
            self._teardown()
            return
        joined = self.room_joined.get() if resumed else None
        if not resumed or joined is None or joined.get("room") != self.room:
            joined = self._call("join", {"t": "join", "room": self.room})
        if joined is None:
            self._teardown()
            return
        self.ready = True
        self.connect_failures = 0
        self.refusals = 0
        self.last_move = time.monotonic()  # the server's speed limit counts from the join
        self._new_phase(self.last_move)

    def _teardown(self) -> None:
        self.ready = False
        ws, self.ws = self.ws, None
        if ws is not None:
            Reactor.get().unregister(ws)
            ws.close()
        for rid, (_name, _t0, result) in list(self.pending.items()):
            if result is not None:
                result.set(None)
            self.pending.pop(rid, None)

    def _send(self, msg: dict[str, Any]) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            ws.send_binary(encode_raw(msg, True))
        except WSClosed:
            self.ready = False  # the reactor reports the close (closed:<code>) once
            return False
        return True

    def _request(
        self, name: str, msg: dict[str, Any], wait: bool = False, extra: int = -1
    ) -> AsyncResult | None:
        rid = next(self.rids)
        msg["rid"] = rid
        result = AsyncResult() if wait else None
        key = name if extra < 0 else f"{name}#{extra}"
        self.pending[rid] = (key, time.perf_counter(), result)
        if not self._send(msg):
            self.pending.pop(rid, None)
            return None
        return result

    def _call(self, name: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Send a request and block this greenlet for its reply (None on error / timeout / close)."""
        result = self._request(name, msg, wait=True)
        if result is None:
            return None
        try:
            return result.get(timeout=REQUEST_TIMEOUT)
        except gevent.Timeout:
            self._expire_pending(time.monotonic() + REQUEST_TIMEOUT)
            return None

    def _expire_pending(self, now: float) -> None:
        if not self.pending:
            return
        limit = time.perf_counter() - REQUEST_TIMEOUT
        for rid, (key, t0, result) in list(self.pending.items()):
            if t0 < limit:
                del self.pending[rid]
                self._fire(f"timeout:{key.split('#')[0]}", (time.perf_counter() - t0) * 1000, 0,
                           TimeoutError(f"no reply to {key} within {REQUEST_TIMEOUT}s"))
                if result is not None:
                    result.set(None)

    # -- receiving ----------------------------------------------------------------------------------

    def _on_frame(self, _op: int, payload: bytes) -> None:
        """Every server message, in the reactor greenlet (must not block)."""
        ts = tick_ts(payload)
        if ts is not None:  # hot path: most frames are ticks; only their age matters here
            self._fire("tick_age", max((time.time() - ts) * 1000.0, 0.0), len(payload))
            return
        try:
            self._on_message(decode_server(payload, validate=False), len(payload))
        except Exception as exc:  # a frame we cannot read is a failure, never a dead reader
            self._fire("bad_frame", 0, len(payload), exc)

    def _on_closed(self, ws: WSClient, exc: WSClosed) -> None:
        if ws is not self.ws:
            return
        self.ready = False
        self.resumable = exc.code == 1006 and not self.stopping   # dropped, not closed by the server
        if self.cutting:
            self.cutting = False
            self._fire("drop", 0)
            self.next_connect = time.monotonic()
            self.connect_failures = 0
        elif not self.stopping:
            self._fire(f"closed:{exc.code}", 0, 0, exc)
        for rid, (_name, _t0, result) in list(self.pending.items()):
            if result is not None:
                result.set(None)
                self.pending.pop(rid, None)

    def _check_seq(self, seq: Any, length: int) -> bool:
        """Track a numbered message; False for a duplicate (dropped). Gaps and duplicates are failures."""
        if type(seq) is not int:
            return True
        tracker = self.seq
        gaps, replayed = tracker.gaps, tracker.replayed
        if not tracker.accept(seq):
            exc = RuntimeError(f"seq {seq} seen twice ({tracker.summary()})")
            self._fire("seq:duplicate", 0, length, exc)
            return False
        if tracker.gaps > gaps:
            self._fire("seq:gap", 0, length, RuntimeError(f"seq {seq} after a gap ({tracker.summary()})"))
        if tracker.replayed > replayed:
            self._fire("replayed", 0, length)
        return True

    def _on_welcome(self, msg: dict[str, Any]) -> None:
        if msg.get("session") != self.session:
            self.seq.reset()
        self.session, self.token = msg.get("session"), msg.get("token")
        recovered = msg.get("recovered")
        if recovered is not None:
            self.seq.resumed(bool(recovered), int(msg.get("replay") or 0))

    def _on_message(self, msg: dict[str, Any], length: int) -> None:
        t = msg.get("t")
        if not self._check_seq(msg.get("seq"), length):
            return
        if t == "welcome":
            self._on_welcome(msg)
        if t == "tick":
            age = (time.time() - float(msg.get("ts", 0.0))) * 1000.0
            self._fire("tick_age", max(age, 0.0), length)
            for mid, hp in msg.get("mobs") or ():
                mob = self.mobs.get(mid)
                if mob is not None:
                    mob[2] = hp
                    mob[3] = 0.0 if hp > 0 else time.monotonic() + RESPAWN_GUESS
            return
        rid = msg.get("rid")
        if rid is not None:
            entry = self.pending.pop(rid, None)
            if entry is None:
                return
            key, t0, result = entry
            name, _, extra = key.partition("#")
            ms = (time.perf_counter() - t0) * 1000.0
            if t == "error":
                code = msg.get("code", "?")
                if name == "login" and code in REFUSAL_CODES:   # the server's clear "not now"
                    self._fire(f"login:{code}", ms, length)
                    retry_after = msg.get("retry_after")
                    self.refused_for = refusal_delay(
                        code, float(retry_after) if isinstance(retry_after, int | float) else None,
                        self.refusals, self.rng)
                    self.refusals += 1
                elif name == "resume" and code == "bad_token":   # the grace period was over: log in again
                    self._fire("resume:bad_token", ms, length)
                elif name == "attack" and code in NORMAL_ATTACK_ERRORS:
                    self._fire(f"attack:{code}", ms, length)
                    if code == "no_such_mob" and extra:
                        mob = self.mobs.get(int(extra))
                        if mob is not None:
                            mob[3] = time.monotonic() + RESPAWN_GUESS  # ticks are not decoded
                else:
                    exc = RuntimeError(f"{name}: {code}: {msg.get('message')}")
                    self._fire(f"error:{code}", ms, length, exc)
                if result is not None:
                    result.set(None)
                return
            self._fire(name, ms, length)
            if t == "joined":
                self._on_joined(msg)
            elif t == "hit" and msg.get("hp", 1) <= 0 and extra:
                mob = self.mobs.get(int(extra))
                if mob is not None:
                    mob[3] = time.monotonic() + RESPAWN_GUESS
            if result is not None:
                result.set(msg)
            return
        if t == "joined":
            self._on_joined(msg)
            if not self.room_joined.ready():
                self.room_joined.set(msg)
        elif t == "error":  # answer to a fire-and-forget move / chat: never expected
            code = msg.get("code", "?")
            self._fire(f"error:{code}", 0, length, RuntimeError(f"{code}: {msg.get('message')}"))
        elif t == "chat":
            sent = self.chat_sent.pop(msg.get("text", ""), None) if msg.get("from") == self.name else None
            if sent is not None:
                self._fire("chat", (time.perf_counter() - sent) * 1000.0, length)
            if len(self.chat_sent) > 20:
                self.chat_sent.clear()
        elif t == "bye":
            reason = msg.get("reason", "?")
            if not self.stopping:
                self._fire(f"bye:{reason}", 0, length, RuntimeError(f"server said bye: {reason}"))
                self.stopping = True  # the close that follows is expected now

    def _on_joined(self, msg: dict[str, Any]) -> None:
        self.you = msg.get("you", -1)
        bounds = msg.get("bounds") or (1000.0, 1000.0)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        for pid, _name, x, y in msg.get("players") or ():
            if pid == self.you:
                self.x, self.y = float(x), float(y)
        self.mobs = {
            int(mid): [float(x), float(y), hp, 0.0 if hp > 0 else time.monotonic() + RESPAWN_GUESS]
            for mid, _kind, x, y, hp in msg.get("mobs") or ()
        }
