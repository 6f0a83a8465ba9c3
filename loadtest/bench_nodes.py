"""Players served by two game server nodes vs one (issue 5 "Speed"), on this machine, bounded in time.

    python -m loadtest.bench_nodes --players 200,400 --seconds 10

Starts a throw-away redis-server (datastore + cluster coordination), then for each player count and for
1 and 2 nodes: ``gameserver serve`` processes (node i pinned to core i with ``taskset`` when there are enough
cores), four rooms with mobs split over the nodes as home rooms (``cluster.rooms``), and one generator in
this process: ``shared.client.GameClient`` players spread over the nodes, each logging in (following
redirects), joining its room (``r0..r3``, redirected to the owner) and moving at ``--move-hz``. Over the
measured window it reports per node: players, CPU % of one core (``/proc``), CPU ms per player-second,
the p99 and max of ``/health`` ``tick_lag`` samples, plus the generator's own CPU. "Capacity" is the
players one core would carry at 80 % CPU at the measured CPU cost per player, summed over the nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtest.procs import free_port
from shared.client import GameClient
from tests.redis_servers import redis_missing, start_server

ROOMS = ["r0", "r1", "r2", "r3"]
SECRET = "bench-secret-0123456789"


def _config(node: str, port: int, redis_url: str, prefix: str, homes: list[str], tick_rate: float) -> str:
    rooms = "\n".join(f'[[rooms]]\nname = "{r}"\nmob_count = 16\n' for r in ["town", *ROOMS])
    return f"""host = "127.0.0.1"
port = {port}
log_level = "WARNING"
[limits]
rate_per_sec = 100.0
rate_burst = 200
[auth]
token_secret = "bench-token-secret-0123456789"
scrypt_n = 16
[game]
tick_rate = {tick_rate}
{rooms}
[cluster]
node_id = "{node}"
redis_url = "{redis_url}"
prefix = "{prefix}"
rooms = {json.dumps(homes)}
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return json.loads(r.read())


def start_nodes(tmp: Path, count: int, redis_url: str, prefix: str, tick_rate: float) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    nodes = []
    for i in range(count):
        port = free_port()
        homes = ROOMS[i::count]
        cfg = tmp / f"node{i}.toml"
        cfg.write_text(_config(f"n{i}", port, redis_url, prefix, homes, tick_rate))
        argv = [sys.executable, "-m", "gameserver", "serve", "--store", redis_url, "--config", str(cfg)]
        if shutil.which("taskset") and cores >= count:
            argv = ["taskset", "-c", str(i % cores), *argv]
        with open(tmp / f"node{i}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                _health(port)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {i} did not start; see {tmp / f'node{i}.log'}")
            time.sleep(0.05)
        nodes.append({"proc": proc, "port": port, "url": f"ws://127.0.0.1:{port}/ws", "homes": homes})
    return nodes


def stop_nodes(nodes: list[dict[str, Any]]) -> None:
    for n in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(n["proc"].pid, signal.SIGTERM)
    for n in nodes:
        try:
            n["proc"].wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(n["proc"].pid, signal.SIGKILL)


async def player(i: int, nodes: list[dict[str, Any]], tag: str, move_hz: float, stop: asyncio.Event,
                 ready: list[int]) -> GameClient:
    entry = nodes[i % len(nodes)]["url"]
    c = await GameClient.connect(entry, timeout=30.0, queue_size=50)
    await c.login(f"p{i}_{tag}", SECRET)
    await c.join(ROOMS[i % len(ROOMS)])
    ready[0] += 1

    async def walk() -> None:
        rng = random.Random(i)
        x, y = 500.0, 500.0
        while not stop.is_set():
            x = min(990.0, max(10.0, x + rng.uniform(-20, 20)))
            y = min(990.0, max(10.0, y + rng.uniform(-20, 20)))
            with contextlib.suppress(Exception):
                await c.move(x, y)
            await asyncio.sleep(1.0 / move_hz)

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _msg in c:
                pass

    asyncio.get_running_loop().create_task(walk())
    asyncio.get_running_loop().create_task(drain())
    return c


async def run_one(players: int, count: int, args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    tag = f"{count}n{players}p{random.randrange(1 << 20):x}"
    with tempfile.TemporaryDirectory(prefix="bench-nodes-") as tmp:
        nodes = start_nodes(Path(tmp), count, redis_url, "b" + tag, args.tick_rate)
        stop = asyncio.Event()
        ready = [0]
        clients: list[GameClient] = []
        try:
            sem = asyncio.Semaphore(50)

            async def one(i: int) -> None:
                async with sem:
                    clients.append(await player(i, nodes, tag, args.move_hz, stop, ready))

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(players))), args.settle_max)
            await asyncio.sleep(1.0)
            cpu0 = [_cpu_seconds(n["proc"].pid) for n in nodes]
            me0 = time.process_time()
            t0 = time.monotonic()
            lags: list[list[float]] = [[] for _ in nodes]
            seated: list[int] = [0] * count
            while time.monotonic() - t0 < args.seconds:
                await asyncio.sleep(0.5)
                for k, n in enumerate(nodes):
                    h = await asyncio.to_thread(_health, n["port"])
                    lags[k].append(float(h["tick_lag"]))
                    if args.verbose:
                        print(k, h, flush=True)
                    seated[k] = int(h["sessions"])
            wall = time.monotonic() - t0
            cpu1 = [_cpu_seconds(n["proc"].pid) for n in nodes]
            gen_cpu = (time.process_time() - me0) / wall * 100
        finally:
            stop.set()
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.close()
            stop_nodes(nodes)
    per_node = []
    capacity = 0.0
    for k in range(count):
        cpu = (cpu1[k] - cpu0[k]) / wall * 100
        served = seated[k]
        ms_per_player = (cpu * 10 / served) if served else 0.0   # CPU ms per player-second
        if ms_per_player:
            capacity += 800 / ms_per_player
        lag = sorted(lags[k])
        per_node.append({"node": k, "players": served, "cpu_pct": round(cpu, 1),
                         "cpu_ms_per_player_s": round(ms_per_player, 3),
                         "tick_lag_p99_ms": round(lag[int(0.99 * (len(lag) - 1))], 2) if lag else None,
                         "tick_lag_max_ms": round(lag[-1], 2) if lag else None})
    return {"nodes": count, "players": players, "per_node": per_node, "generator_cpu_pct": round(gen_cpu, 1),
            "capacity_at_80pct": int(capacity)}


def format_result(r: dict[str, Any]) -> str:
    lines = [f"{r['nodes']} node(s), {r['players']} players: est. capacity {r['capacity_at_80pct']} players "
             f"(generator {r['generator_cpu_pct']}% CPU)"]
    for n in r["per_node"]:
        lines.append(f"  node {n['node']}: {n['players']} players, {n['cpu_pct']}% CPU, "
                     f"{n['cpu_ms_per_player_s']} ms CPU per player-second, tick lag p99 "
                     f"{n['tick_lag_p99_ms']} ms, max {n['tick_lag_max_ms']} ms")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--players", type=lambda s: [int(x) for x in s.split(",")], default=[200])
    p.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--move-hz", type=float, default=5.0)
    p.add_argument("--tick-rate", type=float, default=20.0)
    p.add_argument("--settle-max", type=float, default=90.0, help="max seconds to log everyone in")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print every /health sample")
    return p


async def main_async(args: argparse.Namespace) -> int:
    reason = redis_missing()
    if reason:
        print(f"bench_nodes: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis_server = start_server(Path(tmp))
        try:
            for players in args.players:
                for count in args.nodes:
                    result = await run_one(players, count, args, redis_server.url())
                    print(json.dumps(result) if args.json else format_result(result), flush=True)
        finally:
            redis_server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
