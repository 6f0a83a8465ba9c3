"""Load generator of ``loadtest.bench_forest``: one asyncio process, raw websockets, many players.

    python -m loadtest.forest_gen --port P --scenario forest --players 1000     (run by bench_forest)

Players (``loadtest.rawws``):

* **walkers** log in, wait for the ``joined`` after ``welcome``, ``join`` the walk room, then random-walk:
  head for a random point of the room at 150 units/s with a ``move`` every 100 ms, pick a new point on
  arrival; ``ping`` every 5 s. Measured while the window is open: every tick frame (counted, not decoded),
  tick age (receive time - tick ``ts``), bytes read, and move->tick latency: the send time of a move to the
  receipt of the first tick whose bytes hold this player's ``moved`` entry at exactly that target (found
  with ``bytes.find`` of the msgpack entry, so every player measures at almost no cost). A target that a
  later one replaces before it shows counts as superseded.
* **arrivals** (storm, idle) log in and stay, pinging every 5 s; measured: welcome time from the first
  connect. ``idle`` is arrivals only (into the start room, ``town``), ``MEASURE_START`` before the first
  and ``MEASURE_END`` 3 s after the last is in: the orchestrator reads the server's RSS at both.

``--tick-format compact`` asks for compact ticks at login (positions in integer tenths); a server that
echoes it in ``welcome`` is then measured in that encoding (a bare server does not: it stays v1).

Refusals: ``error busy`` / ``server_full`` (or an HTTP 503 upgrade) are counted by code and the login is
retried on the same socket after ``shared.retry.refusal_delay`` (``retry_after`` times a random 1.0-1.5, as
every client of this repo waits). Failures:
no TCP connection or no finished upgrade within ``--timeout`` s, no answer to a login / join within it, a
drop while playing; each counted by reason. Prints ``MEASURE_START`` / ``MEASURE_END`` around the window
(the orchestrator samples the server's CPU in between), then one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from collections import Counter
from typing import Any

import msgpack

from loadtest.procs import raise_fd_limit
from loadtest.rawws import RawWs, is_tick, tick_ts
from shared.codec import COMPACT_SCALE
from shared.retry import refusal_delay

SPEED = 150.0  # units per second of the walk
MOVE_EVERY = 0.1
PING_EVERY = 5.0
SLOTS = 10  # players are stepped in 10 groups, one every 10 ms
MAX_PENDING = 4  # move targets waiting to show in a tick


class Player(RawWs):
    """One simulated player: ``walker`` (joins ``room`` and walks) or ``arrival`` (logs in and idles)."""

    def __init__(self, gen: Generator, idx: int, name: str, walker: bool, measured: bool) -> None:
        super().__init__()
        self.gen = gen
        self.idx = idx
        self.name = name
        self.walker = walker
        self.measured = measured  # its ticks count toward frames / ages / latency
        self.rng = random.Random(idx)
        self.state = "connecting"
        self.t_first = self.t_state = time.perf_counter()
        self.t_welcome = 0.0
        self.scale = 1   # COMPACT_SCALE once the server agreed to compact ticks
        self.walking_since = math.inf
        self.retry_at = 0.0
        self.refused = 0   # login refusals so far (the backoff's attempt number)
        self.you = -1
        self.x = self.y = 0.0
        self.side = (1000.0, 1000.0)
        self.goal = (0.0, 0.0)
        self.next_ping = 0.0
        self.ticks = 0
        self.bytes_mark = 0
        self.pending: list[tuple[bytes, float]] = []

    # -- state ---------------------------------------------------------------------------------------
    def to(self, state: str) -> None:
        self.state = state
        self.t_state = time.perf_counter()

    def fail(self, reason: str) -> None:
        if self.state in ("failed", "done"):
            return
        self.gen.failures[reason] += 1
        if len(self.gen.errors) < 20:
            self.gen.errors.append(f"{self.name}: {reason} (in state {self.state})")
        self.to("failed")
        self.close()

    def login(self) -> None:
        self.to("login")
        msg = {"t": "login", "name": self.name, "secret": f"forest-bench-{self.name}", "rid": 1}
        if self.gen.args.tick_format == "compact":
            msg["tick_format"] = "compact"
        self.send(msg)

    # -- wire ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.to("upgrade")

    def on_open(self) -> None:
        self.login()

    def on_refused(self, status: str) -> None:
        code = "http_503" if " 503 " in status + " " else "http_other"
        self.gen.refusals[code] += 1
        self.fail(f"upgrade refused: {status[:40]}")

    def on_lost(self, exc: Exception | None) -> None:
        if self.gen.stopping or self.state in ("failed", "done"):
            return
        self.fail("dropped while playing" if self.state == "walking" else f"dropped during {self.state}")

    def on_message(self, payload: bytes, now: float) -> None:
        if is_tick(payload):
            if self.measured and self.gen.measuring:
                self.ticks += 1
                ts = tick_ts(payload)
                if ts is not None:
                    self.gen.ages.append(time.time() - ts)
                pending = self.pending
                for i in range(len(pending) - 1, -1, -1):
                    entry, sent = pending[i]
                    if payload.find(entry) >= 0:
                        self.gen.latencies.append(now - sent)
                        self.gen.superseded += i
                        del pending[: i + 1]
                        break
            return
        msg = msgpack.unpackb(payload)
        t = msg.get("t")
        rid = msg.get("rid")
        if t == "error":
            code = str(msg.get("code"))
            after = msg.get("retry_after")
            wait = refusal_delay(code, float(after) if isinstance(after, int | float) else None,
                                 self.refused, self.rng) if rid == 1 else None
            if wait is not None and self.state == "login":
                self.gen.refusals[code] += 1
                self.refused += 1
                self.retry_at = now + wait
                self.to("refused")
            else:
                self.fail(f"error {code}")
        elif t == "bye":
            self.fail(f"bye {msg.get('reason')}")
        elif t == "welcome" and self.state == "login":
            if msg.get("tick_format") == "compact":
                self.scale = COMPACT_SCALE
            self.t_welcome = now
            self.gen.welcome_s.append(now - self.t_first)
            self.to("placing" if self.walker else "done")
            self.next_ping = now + self.rng.uniform(0, PING_EVERY)
        elif t == "joined" and rid is None and self.state == "placing":
            self.to("joining")
            self.send({"t": "join", "room": self.gen.room, "rid": 2})
        elif t == "joined" and rid == 2 and self.state == "joining":
            self.you = msg["you"]
            w, h = msg.get("bounds") or (1000.0, 1000.0)
            self.side = (float(w), float(h))
            for pid, _name, x, y in msg["players"]:
                if pid == self.you:
                    self.x, self.y = float(x), float(y)
            self.goal = self._new_goal()
            self.walking_since = now
            self.to("walking")
            self.gen.walking += 1

    # -- behaviour -----------------------------------------------------------------------------------
    def _new_goal(self) -> tuple[float, float]:
        w, h = self.side
        return self.rng.uniform(0.0, w), self.rng.uniform(0.0, h)

    def step(self, now: float) -> None:
        """Called every 100 ms: a move while walking, a ping every 5 s once welcomed."""
        state = self.state
        if state == "refused":
            if now >= self.retry_at:
                self.login()
            elif now >= self.next_ping:   # keep the socket from the idle timeout while waiting
                self.next_ping = now + PING_EVERY
                self.send({"t": "ping", "rid": 3})
            return
        if state != "walking" and state != "done":
            return
        if now >= self.next_ping:
            self.next_ping = now + PING_EVERY
            self.send({"t": "ping", "rid": 3})
        if state != "walking":
            return
        gx, gy = self.goal
        dx, dy = gx - self.x, gy - self.y
        dist = math.hypot(dx, dy)
        step = SPEED * MOVE_EVERY
        if dist <= step:
            x, y = gx, gy
            self.goal = self._new_goal()
        else:
            x, y = self.x + dx * step / dist, self.y + dy * step / dist
        self.x, self.y = x, y = round(x, 2), round(y, 2)
        self.send({"t": "move", "x": x, "y": y})
        if self.measured and self.gen.measuring:
            pending = self.pending
            if len(pending) >= MAX_PENDING:
                del pending[0]
                self.gen.superseded += 1
            scale = self.scale
            entry = [self.you, x, y] if scale == 1 else [self.you, round(x * scale), round(y * scale)]
            pending.append((msgpack.packb(entry), now))


class Generator:
    """Owns the players, the 10 ms stepping driver, the timeout watchdog and the measurements."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = args.port
        self.room = args.room
        self.timeout = args.timeout
        self.players: list[Player] = []
        self.slots: list[list[Player]] = [[] for _ in range(SLOTS)]
        self.failures: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.errors: list[str] = []
        self.ages: list[float] = []
        self.latencies: list[float] = []
        self.welcome_s: list[float] = []
        self.superseded = 0
        self.walking = 0
        self.measuring = False
        self.stopping = False

    def spawn(self, name: str, walker: bool, measured: bool) -> Player:
        p = Player(self, len(self.players), name, walker, measured)
        self.players.append(p)
        self.slots[p.idx % SLOTS].append(p)
        asyncio.get_running_loop().create_task(self._connect(p))
        return p

    async def _connect(self, p: Player) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: p, "127.0.0.1", self.port), self.timeout)
        except TimeoutError:
            p.fail("connect timeout")
        except OSError as exc:
            p.fail(f"connect error {exc.errno}")

    async def ramp(self, names: list[str], walker: bool, measured: bool, rate: float) -> None:
        """Start one player per name at ``rate`` connects/s (deadline-paced, no bursts)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, name in enumerate(names):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.spawn(name, walker, measured)

    async def drive(self) -> None:
        """Step each slot's players every 100 ms, the slots 10 ms apart; watch timeouts every 250 ms."""
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        k = 0
        while not self.stopping:
            now = time.perf_counter()
            for p in self.slots[k % SLOTS]:
                p.step(now)
            if k % 25 == 0:
                self._watch(now)
            k += 1
            next_t += MOVE_EVERY / SLOTS
            delay = next_t - loop.time()
            if delay < -MOVE_EVERY:
                next_t = loop.time()
            await asyncio.sleep(max(0.0, delay))

    def _watch(self, now: float) -> None:
        limit = now - self.timeout
        for p in self.players:
            if p.state in ("connecting", "upgrade", "login", "placing", "joining") and p.t_state < limit:
                p.fail(f"{p.state} timeout")

    @staticmethod
    def settled(group: list[Player], refused_ok: bool) -> bool:
        """Everyone in: playing, failed, or (``refused_ok``) told to come back later."""
        final = ("walking", "done", "failed", "refused") if refused_ok else ("walking", "done", "failed")
        return all(p.state in final for p in group)

    async def wait_settled(self, group: list[Player], limit: float, refused_ok: bool) -> None:
        deadline = time.perf_counter() + limit
        while not self.settled(group, refused_ok) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    def open_window(self) -> float:
        for p in self.players:
            p.ticks = 0
            p.bytes_mark = p.bytes_in
        self.ages.clear()
        self.latencies.clear()
        self.superseded = 0
        self.measuring = True
        print("MEASURE_START", flush=True)
        return time.perf_counter()

    def close_window(self, t0: float) -> float:
        self.measuring = False
        print("MEASURE_END", flush=True)
        return time.perf_counter() - t0

    def walk_stats(self, t0: float, dt: float, tick_rate: float) -> dict[str, Any]:
        """Frames / bytes / latency of the measured walkers that walked through the whole window."""
        steady = [p for p in self.players if p.measured and p.walking_since <= t0 and p.state == "walking"]
        frames = sum(p.ticks for p in steady)
        expected = len(steady) * tick_rate * dt
        nbytes = sum(p.bytes_in - p.bytes_mark for p in steady)
        return {
            "steady_players": len(steady),
            "frames": frames,
            "frames_expected": expected,
            "delivered_pct": 100.0 * frames / expected if expected else float("nan"),
            "bytes_per_player_s": nbytes / len(steady) / dt if steady else float("nan"),
            "lat_p50_ms": pct(self.latencies, 0.50) * 1000,
            "lat_p99_ms": pct(self.latencies, 0.99) * 1000,
            "lat_samples": len(self.latencies),
            "superseded": self.superseded,
            "age_p50_ms": pct(self.ages, 0.50) * 1000,
            "age_p99_ms": pct(self.ages, 0.99) * 1000,
            "age_max_ms": max(self.ages, default=float("nan")) * 1000,
        }


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    gen = Generator(args)
    me = psutil.Process()
    driver = asyncio.create_task(gen.drive())
    result: dict[str, Any] = {"scenario": args.scenario}
    t_start = time.perf_counter()
    try:
        if args.scenario == "storm":
            residents = [f"r{i:05d}" for i in range(args.residents)]
            await gen.ramp(residents, walker=True, measured=True, rate=args.rate)
            await gen.wait_settled(gen.players, args.settle_max, refused_ok=False)
            await asyncio.sleep(args.warmup)
            me.cpu_percent(None)
            t0 = gen.open_window()
            arrivals_from = len(gen.players)
            await gen.ramp([f"s{i:05d}" for i in range(args.storm)], walker=False, measured=False,
                           rate=args.rate)
            arrivals = gen.players[arrivals_from:]
            await gen.wait_settled(arrivals, args.settle_max, refused_ok=False)
            await asyncio.sleep(1.0)
            dt = gen.close_window(t0)
            welcomed = [p.t_welcome - p.t_first for p in arrivals if p.t_welcome]
            result.update(gen.walk_stats(t0, dt, args.tick_rate))
            result.update({
                "arrivals": len(arrivals), "welcomed": len(welcomed),
                "welcome_p50_s": pct(welcomed, 0.50), "welcome_p99_s": pct(welcomed, 0.99),
                "welcome_max_s": max(welcomed, default=float("nan")),
                "welcome_over_20s": sum(w > 20.0 for w in welcomed),
                "arrival_failures": sum(p.state == "failed" for p in arrivals),
            })
        elif args.scenario == "idle":
            t0 = gen.open_window()
            await gen.ramp([f"i{i:05d}" for i in range(args.players)], walker=False, measured=False,
                           rate=args.rate)
            await gen.wait_settled(gen.players, args.settle_max, refused_ok=False)
            result["ready_after_s"] = time.perf_counter() - t_start
            await asyncio.sleep(3.0)
            dt = gen.close_window(t0)
            result["welcomed"] = sum(1 for p in gen.players if p.t_welcome)
            result["welcome_p99_s"] = pct(gen.welcome_s, 0.99)
        else:  # forest and overload: walkers only
            names = [f"w{i:05d}" for i in range(args.players)]
            await gen.ramp(names, walker=True, measured=True, rate=args.rate)
            await gen.wait_settled(gen.players, args.settle_max, refused_ok=True)
            result["ready_after_s"] = time.perf_counter() - t_start
            await asyncio.sleep(args.warmup)
            me.cpu_percent(None)
            t0 = gen.open_window()
            await asyncio.sleep(args.seconds)
            dt = gen.close_window(t0)
            result.update(gen.walk_stats(t0, dt, args.tick_rate))
        result["generator_cpu"] = me.cpu_percent(None)
        result["seconds"] = dt
    finally:
        gen.stopping = True
        await driver
        for p in gen.players:
            p.close()
        await asyncio.sleep(0.2)
    welcomes = gen.welcome_s
    result.update({
        "players": len(gen.players),
        "walking": sum(p.state == "walking" for p in gen.players),
        "failed": sum(p.state == "failed" for p in gen.players),
        "failures": dict(gen.failures),
        "refusals": dict(gen.refusals),
        "still_refused": sum(p.state == "refused" for p in gen.players),
        "welcome_all_max_s": max(welcomes, default=float("nan")),
        "errors": gen.errors,
    })
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.forest_gen", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scenario", choices=["forest", "storm", "overload", "idle"], default="forest")
    p.add_argument("--players", type=int, default=500, help="walkers (forest, overload), arrivals (idle)")
    p.add_argument("--tick-format", choices=["v1", "compact"], default="v1")
    p.add_argument("--residents", type=int, default=200, help="walkers already playing (storm)")
    p.add_argument("--storm", type=int, default=2000, help="first logins arriving (storm)")
    p.add_argument("--room", default="forest", help="room the walkers join")
    p.add_argument("--rate", type=float, default=200.0, help="connects per second")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window (forest, overload)")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds of walking before the window")
    p.add_argument("--settle-max", type=float, default=60.0, help="max seconds for everyone to get in")
    p.add_argument("--timeout", type=float, default=10.0, help="connect / upgrade / reply timeout")
    p.add_argument("--tick-rate", type=float, default=20.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
