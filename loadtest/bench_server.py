"""Server speed benchmark (issue 3 "Speed"): one room, N players moving at 10 Hz, ~50 per area of interest.

    python -m loadtest.bench_server --players 500,1000 --seconds 20

For each N: writes a config with one big room sized so that a 3x3-cell neighbourhood (750 x 750 units)
holds about `--aoi` players, starts the server pinned to core 0 (`taskset -c 0`, fresh embedded
datastore), and a cheap load generator pinned to core 1: this module in `--generator` mode, one asyncio
process with a hand-rolled websocket protocol (no per-message library overhead). Every player logs in,
joins the room, walks to its home spot, then random-walks around it with small steps at 10 Hz. After
everyone is home the generator measures `--seconds` seconds while the orchestrator samples the server:

* server CPU % (psutil, of one core) and RSS;
* moves in/s (server counter) and tick frames out/s against expected (N x tick rate: every area has movers);
* tick work p50/p99 (from the server's tick-duration histogram, interpolated in its buckets) and overruns;
* move-to-own-position latency p50/p99: send time of a move to the receipt of the tick whose `moved` shows
  the player at exactly that target (sampled on one player in `--sample`, chosen at random, which decodes
  its ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack

from loadtest.procs import pinned, server_port, stop_process, wait_healthy
from loadtest.rawws import RawWs, is_tick

REPO = Path(__file__).resolve().parents[1]
ROOM = "bench"
CELL = 250.0
STEP = 8.0  # units per move at 10 Hz: well under the 300 u/s limit, so bunched moves catch up
WANDER = 60.0  # random walk stays within this radius of home


# ------------------------------------------------------------------------------------------- generator


class BenchPlayer(RawWs):
    """One player over a raw websocket: login, join, walk home, random-walk; counts what arrives."""

    def __init__(self, gen: Generator, idx: int, home: tuple[float, float], sample: bool) -> None:
        super().__init__()
        self.gen = gen
        self.idx = idx
        self.home = home
        self.sample = sample
        self.rng = random.Random(idx)
        self.state = "connecting"  # -> login -> placed -> joining -> walking -> home
        self.you = -1
        self.x = self.y = 0.0
        self.ticks = 0
        self.sent_at: dict[tuple[float, float], float] = {}
        self.latencies: list[float] = []
        self.unmatched = 0

    # -- wire ---------------------------------------------------------------------------------------
    def on_lost(self, exc: Exception | None) -> None:
        if not self.gen.stopping:
            self.gen.errors.append(f"player {self.idx}: connection lost ({exc!r})")

    def on_refused(self, status: str) -> None:
        self.gen.errors.append(f"player {self.idx}: upgrade refused ({status})")

    def on_open(self) -> None:
        self.state = "login"
        name = f"b{self.idx:05d}"
        self.send({"t": "login", "name": name, "secret": f"bench-secret-{name}", "rid": 1})

    # -- game ---------------------------------------------------------------------------------------
    def on_message(self, payload: bytes, now: float) -> None:
        if is_tick(payload):
            self.ticks += 1
            if not self.sample or self.state != "home":
                return
            msg = msgpack.unpackb(payload)
            for pid, x, y in msg.get("moved", ()):
                if pid == self.you:
                    t = self.sent_at.pop((x, y), None)
                    if t is not None:
                        self.latencies.append(now - t)
                    break
            return
        msg = msgpack.unpackb(payload)
        t = msg.get("t")
        if t == "error":
            self.gen.errors.append(f"player {self.idx}: error {msg.get('code')}: {msg.get('message')}")
        elif t == "bye":
            self.gen.errors.append(f"player {self.idx}: bye {msg.get('reason')}")
        elif t == "joined" and msg.get("rid") is None and self.state == "login":
            self.state = "joining"  # placed in the character's room: now join the bench room
            self.send({"t": "join", "room": ROOM, "rid": 2})
        elif t == "joined" and msg.get("rid") == 2:
            self.you = msg["you"]
            for pid, _name, x, y in msg["players"]:
                if pid == self.you:
                    self.x, self.y = float(x), float(y)
            self.state = "walking"

    def step(self, now: float) -> None:
        """One move (called at 10 Hz by the generator's driver)."""
        if self.state == "walking":
            hx, hy = self.home
            dx, dy = hx - self.x, hy - self.y
            dist = math.hypot(dx, dy)
            if dist <= 25.0:
                self.x, self.y = hx, hy
                self.state = "home"
                self.gen.at_home += 1
            else:
                self.x += dx * 25.0 / dist
                self.y += dy * 25.0 / dist
            self.send({"t": "move", "x": round(self.x, 2), "y": round(self.y, 2)})
        elif self.state == "home":
            hx, hy = self.home
            ang = self.rng.uniform(0, 2 * math.pi)
            nx, ny = self.x + STEP * math.cos(ang), self.y + STEP * math.sin(ang)
            if math.hypot(nx - hx, ny - hy) > WANDER:  # turn back toward home
                nx, ny = self.x + (hx - self.x) * 0.2, self.y + (hy - self.y) * 0.2
            self.x, self.y = round(nx, 2), round(ny, 2)
            if self.sample and self.gen.measuring:
                if len(self.sent_at) > 50:  # a move shadowed by a later one in the same tick: unmatched
                    self.unmatched += len(self.sent_at)
                    self.sent_at.clear()
                self.sent_at[(self.x, self.y)] = now
            self.send({"t": "move", "x": self.x, "y": self.y})
            self.gen.moves += 1


class Generator:
    def __init__(self, port: int, players: int, side: float, move_hz: float, sample_every: int) -> None:
        self.port = port
        self.n = players
        self.side = side
        self.move_hz = move_hz
        self.sample_every = sample_every
        self.players: list[BenchPlayer] = []
        self.errors: list[str] = []
        self.at_home = 0
        self.moves = 0
        self.measuring = False
        self.stopping = False

    async def connect_all(self, rate: float = 200.0) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(12345)
        margin = 60.0
        for i in range(self.n):
            home = (rng.uniform(margin, self.side - margin), rng.uniform(margin, self.side - margin))
            # sample at random, not every k-th: players share 10 send slots per 100 ms, and every k-th
            # player would sit in the same slots, i.e. at a fixed phase against the 50 ms tick
            p = BenchPlayer(self, i, home, sample=rng.random() < 1.0 / self.sample_every)
            await loop.create_connection(lambda p=p: p, "127.0.0.1", self.port)
            self.players.append(p)
            if i % 20 == 19:
                await asyncio.sleep(20 / rate)

    async def drive(self, until: asyncio.Event) -> None:
        """Call each player's step at move_hz, spread evenly over the period (10 ms slots)."""
        slots = 10
        period = 1.0 / self.move_hz
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        k = 0
        while not until.is_set():
            now = time.perf_counter()
            for p in self.players[k % slots :: slots]:
                p.step(now)
            k += 1
            next_t += period / slots
            delay = next_t - loop.time()
            if delay < -period:
                next_t = loop.time()
            await asyncio.sleep(max(0.0, delay))


async def generator_main(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    gen = Generator(args.port, args.gen_players, args.side, args.move_hz, args.sample)
    stop_driving = asyncio.Event()
    driver = asyncio.create_task(gen.drive(stop_driving))
    me = psutil.Process()
    t_start = time.monotonic()
    await gen.connect_all()
    deadline = time.monotonic() + args.settle_max
    while gen.at_home < gen.n and time.monotonic() < deadline and not gen.errors:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    ready_after = time.monotonic() - t_start
    await asyncio.sleep(2.0)  # let the first ticks at home settle
    frames0 = sum(p.ticks for p in gen.players)
    moves0 = gen.moves
    me.cpu_percent(None)
    gen.measuring = True
    print("MEASURE_START", flush=True)
    t0 = time.perf_counter()
    await asyncio.sleep(args.seconds)
    dt = time.perf_counter() - t0
    gen.measuring = False
    print("MEASURE_END", flush=True)
    gen_cpu = me.cpu_percent(None)
    frames = sum(p.ticks for p in gen.players) - frames0
    moves = gen.moves - moves0
    lat = sorted(x for p in gen.players for x in p.latencies)
    unmatched = sum(p.unmatched + len(p.sent_at) for p in gen.players)
    gen.stopping = True
    stop_driving.set()
    await driver
    for p in gen.players:
        if p.transport is not None:
            p.transport.close()
    await asyncio.sleep(0.2)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, max(0, math.ceil(q * len(lat)) - 1))] * 1000 if lat else float("nan")

    return {
        "players": gen.n, "at_home": gen.at_home, "ready_after_s": ready_after, "seconds": dt,
        "frames_in": frames, "moves_sent": moves, "lat_p50_ms": pct(0.50), "lat_p99_ms": pct(0.99),
        "lat_samples": len(lat), "unmatched_moves": unmatched, "generator_cpu": gen_cpu,
        "errors": gen.errors[:20], "error_count": len(gen.errors),
    }


# ---------------------------------------------------------------------------------------- orchestrator


def room_side(players: int, aoi: int) -> float:
    """Side of a square room where a 3x3-cell neighbourhood holds ~`aoi` players, in whole cells."""
    side = math.sqrt(players * (3 * CELL) ** 2 / aoi)
    return max(3, math.ceil(side / CELL)) * CELL


def write_config(path: Path, side: float, tick_rate: float) -> None:
    path.write_text(
        f"""[game]
tick_rate = {tick_rate}
start_room = "town"

[auth]
scrypt_n = 16

[[rooms]]
name = "town"

[[rooms]]
name = "{ROOM}"
width = {side}
height = {side}
"""
    )


def scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, Any] = {"buckets": {}, "count": 0.0, "sum": 0.0, "overruns": 0.0, "moves": 0.0,
                           "ticks_out": 0.0, "coalesced": 0.0}
    for line in text.splitlines():
        if line.startswith("#") or (f'room="{ROOM}"' not in line and "gameserver_messages_" not in line):
            continue
        name, _, value = line.rpartition(" ")
        v = float(value)
        if name.startswith("gameserver_tick_duration_seconds_bucket"):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            out["buckets"][float("inf") if le == "+Inf" else float(le)] = v
        elif name.startswith("gameserver_tick_duration_seconds_count"):
            out["count"] = v
        elif name.startswith("gameserver_tick_duration_seconds_sum"):
            out["sum"] = v
        elif name.startswith("gameserver_tick_overruns_total"):
            out["overruns"] = v
        elif name.startswith("gameserver_coalesced_ticks_total"):
            out["coalesced"] = v
        elif name.startswith("gameserver_messages_in_total") and 'type="move"' in name:
            out["moves"] = v
        elif name.startswith("gameserver_messages_out_total") and 'type="tick"' in name:
            out["ticks_out"] = v
    return out


def hist_quantile(b0: dict[float, float], b1: dict[float, float], q: float) -> float:
    """Quantile (seconds) of a Prometheus histogram's increase between two scrapes, linear in buckets."""
    bounds = sorted(b1)
    counts = [b1[b] - b0.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            frac = (rank - prev_count) / max(count - prev_count, 1e-9)
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, count
    return prev_bound


def bench_one(players: int, args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    side = room_side(players, args.aoi)
    cfg = work / "bench.toml"
    write_config(cfg, side, args.tick_rate)
    port = server_port()
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        pinned(args.server_core, [sys.executable, "-m", "gameserver.cli", "serve", "--host", "127.0.0.1",
                                  "--port", str(port), "--data", str(work / "data"), "--config", str(cfg),
                                  "--log-level", "WARNING"]),
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    gen: subprocess.Popen | None = None
    try:
        wait_healthy(port, server)
        sproc = psutil.Process(server.pid)
        gen = subprocess.Popen(
            pinned(args.client_core, [sys.executable, "-m", "loadtest.bench_server", "--generator",
                                      "--port", str(port), "--gen-players", str(players), "--side", str(side),
                                      "--seconds", str(args.seconds), "--move-hz", str(args.move_hz),
                                      "--sample", str(args.sample), "--settle-max", str(args.settle_max)]),
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        assert gen.stdout is not None
        m0 = m1 = None
        cpu = rss = 0.0
        t0 = t1 = 0.0
        result: dict[str, Any] = {}
        for line in gen.stdout:  # bounded: the generator ends after settle + seconds
            line = line.strip()
            if line == "MEASURE_START":
                m0, t0 = scrape(port), time.perf_counter()
                sproc.cpu_percent(None)
            elif line == "MEASURE_END":
                cpu = sproc.cpu_percent(None)
                rss = sproc.memory_info().rss / 2**20
                m1, t1 = scrape(port), time.perf_counter()
            elif line.startswith("{"):
                result = json.loads(line)
        gen.wait(timeout=60)
        if m0 is None or m1 is None:
            raise RuntimeError(f"generator did not measure: {result}")
        dt = t1 - t0
        ticks = m1["count"] - m0["count"]
        expected = players * args.tick_rate * result["seconds"]
        result.update({
            "room_side": side,
            "server_cpu": cpu,
            "server_rss_mb": rss,
            "moves_in_s": (m1["moves"] - m0["moves"]) / dt,
            "moves_sent_s": result["moves_sent"] / result["seconds"],
            "frames_out_s": (m1["ticks_out"] - m0["ticks_out"]) / dt,
            "frames_in_s": result["frames_in"] / result["seconds"],
            "frames_expected_s": players * args.tick_rate,
            "delivered_pct": 100.0 * result["frames_in"] / expected if expected else 0.0,
            "ticks": ticks,
            "overruns": m1["overruns"] - m0["overruns"],
            "coalesced": m1["coalesced"] - m0["coalesced"],
            "tick_work_p50_ms": hist_quantile(m0["buckets"], m1["buckets"], 0.50) * 1000,
            "tick_work_p99_ms": hist_quantile(m0["buckets"], m1["buckets"], 0.99) * 1000,
            "tick_work_mean_ms": (m1["sum"] - m0["sum"]) / ticks * 1000 if ticks else float("nan"),
        })
        return result
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait(timeout=10)
        stop_process(server)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def format_result(r: dict[str, Any]) -> str:
    return "\n".join([
        f"== {r['players']} players, room {r['room_side']:.0f}x{r['room_side']:.0f}, ready after "
        f"{r['ready_after_s']:.1f}s, measured {r['seconds']:.1f}s ==",
        f"server CPU        {r['server_cpu']:6.1f} % of one core      RSS {r['server_rss_mb']:.0f} MB",
        f"moves in/s        {r['moves_in_s']:8.0f}  (sent {r['moves_sent_s']:.0f}/s)",
        f"tick frames out/s {r['frames_out_s']:8.0f}  received {r['frames_in_s']:.0f}/s, expected "
        f"{r['frames_expected_s']:.0f}/s -> {r['delivered_pct']:.2f} % delivered",
        f"tick work         p50 {r['tick_work_p50_ms']:.2f} ms  p99 {r['tick_work_p99_ms']:.2f} ms  "
        f"mean {r['tick_work_mean_ms']:.2f} ms  (histogram-interpolated)",
        f"overrun ticks     {r['overruns']:.0f} of {r['ticks']:.0f}   (ticks coalesced for backed-up "
        f"sessions: {r['coalesced']:.0f})",
        f"move->own pos     p50 {r['lat_p50_ms']:.1f} ms  p99 {r['lat_p99_ms']:.1f} ms  "
        f"({r['lat_samples']} samples, {r['unmatched_moves']} moves superseded before shown)",
        f"generator CPU     {r['generator_cpu']:6.1f} %   errors {r['error_count']}"
        + ("".join(f"\n  {e}" for e in r["errors"][:5])),
    ])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_server", description=__doc__.split("\n")[0])
    p.add_argument("--players", type=lambda s: [int(x) for x in s.split(",")], default=[500, 1000])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    p.add_argument("--aoi", type=int, default=50, help="target players per 3x3-cell neighbourhood")
    p.add_argument("--tick-rate", type=float, default=20.0)
    p.add_argument("--move-hz", type=float, default=10.0)
    p.add_argument("--sample", type=int, default=5, help="one player in k measures move latency")
    p.add_argument("--settle-max", type=float, default=60.0, help="max seconds to get everyone home")
    p.add_argument("--server-core", default="0")
    p.add_argument("--client-core", default="1")
    p.add_argument("--json", action="store_true", help="print results as JSON lines")
    # generator mode (internal)
    p.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--gen-players", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--side", type=float, default=1000.0, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.generator:
        result = asyncio.run(generator_main(args))
        print(json.dumps(result), flush=True)
        return 0
    failed = False
    for n in args.players:
        r = bench_one(n, args)
        print(json.dumps(r) if args.json else format_result(r), flush=True)
        failed |= bool(r["error_count"]) or r["at_home"] < n
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
