"""Dense-forest, login-storm, overload and idle-memory benchmark (issue 12), ours beside bare baselines in
one run.

    python -m loadtest.bench_forest                          # forest: 500 and 1,000 walkers
    python -m loadtest.bench_forest --tick-format compact    # the same, players asking for compact ticks
    python -m loadtest.bench_forest --scenario idle          # RSS per idle player, 2,000 in town
    python -m loadtest.bench_forest --scenario storm         # 2,000 first logins at 200/s, 200 walkers
    python -m loadtest.bench_forest --scenario overload --players 3000
    python -m loadtest.bench_forest --servers ours,bare,node --repeat 3 --json

Each server runs pinned to core 0 (``taskset -c 0``), the generator (``loadtest.forest_gen``: one asyncio
process on raw websockets) to core 1. Servers, one after the other for every player count:

* ``ours``: ``gameserver serve`` with the DEFAULT config (default world: ``forest`` 1000 x 1000 with its
  mobs, default secret hashing, embedded store with fsync durability) on a fresh data dir;
* ``bare``: ``loadtest.bare_server`` (websockets + uvloop, same grid area of interest, one msgpack encode
  per cell, nothing else);
* ``before`` (with ``--before DIR``): ``gameserver serve`` of another checkout (say main), default config;
* ``node`` (optional): ``loadtest/bare_server.mjs`` on Node's ``ws``, run only when ``node`` and ``npm``
  exist; ``ws`` and ``@msgpack/msgpack`` are installed into a temp dir with npm (nothing is committed).

Scenarios (see ``loadtest.forest_gen`` for the players):

* ``forest``: N walkers join ``forest`` at 200 connects/s and random-walk at 150 units/s (a move every
  100 ms, a ping every 5 s). Printed per server: CPU % of one core, tick frames delivered vs expected (N x
  tick rate x window: every area has movers every tick, so every player must get every tick), move->tick
  p50/p99, tick age p99, failed connects / logins, refusals, bytes per player-second; and ours / bare.
* ``storm``: 200 walkers play in ``forest`` while 2,000 first logins arrive at 200/s into ``town``.
  Printed: connect / upgrade / login failures, time from first connect to ``welcome`` (p50 / p99 / max,
  how many over 20 s), refusals, the walkers' tick age p50 / p99 / max and frames delivered.
* ``overload``: N walkers (e.g. 3,000, far past capacity) arrive at 200/s; refused ones retry after
  ``retry_after``. Printed: how many got in, refusals by code, failures (timeouts must be 0), and for the
  admitted: frames delivered, move->tick and tick age p99.
* ``idle``: N players (default 2,000) log in at 200/s and stay in ``town`` (the start room, everyone at
  its centre, so every join's snapshot lists everyone in), pinging every 5 s. Printed: the server's RSS
  growth per player that got in, from just before the first connect to 3 s after the last welcome.

``--together`` runs the servers at the same time instead (all on the server core, each with its own
generator on the generator core): a paired comparison that cancels this VM's slow drifts (the same server
measured twice in a row here varies by up to +-20 %), at the price of servers sharing caches and a core.
Use it for A/B comparisons (e.g. ``--servers ours,before --together``), not for absolute figures.

``--pyspy DIR`` records every Python server (ours, before, bare) with py-spy (non-blocking, during the
window) and prints the top functions by self time. Server ports are picked below the ephemeral range; the
fd limit is raised for the children.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from loadtest.procs import pinned, raise_fd_limit, server_port, stop_process, wait_healthy

REPO = Path(__file__).resolve().parents[1]
NODE_PACKAGES = ("ws@8", "@msgpack/msgpack@3")


# ----------------------------------------------------------------------------------------------- servers


def wait_listening(port: int, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port (the bare servers have no /health)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:g} s")


def node_modules(cache: Path) -> Path | None:
    """``node_modules`` with ws and @msgpack/msgpack in ``cache`` (npm install once); None without node."""
    if not (shutil.which("node") and shutil.which("npm")):
        return None
    target = cache / "node_modules"
    if not (target / "ws").exists() or not (target / "@msgpack" / "msgpack").exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--silent",
                            "--prefix", str(cache), *NODE_PACKAGES],
                           check=True, timeout=180, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"node baseline skipped: npm install failed ({exc})", file=sys.stderr)
            return None
    return target


class Server:
    """One server subprocess of a kind (ours / bare / node) on a fresh port and work dir."""

    def __init__(self, kind: str, work: Path, args: argparse.Namespace, modules: Path | None) -> None:
        self.kind = kind
        self.port = server_port()
        core = args.server_core
        env = dict(os.environ)
        cwd = REPO
        if kind in ("ours", "before"):
            argv = [sys.executable, "-m", "gameserver.cli", "serve", "--host", "127.0.0.1", "--port",
                    str(self.port), "--data", str(work / "data"), "--log-level", "WARNING"]
            if args.config and kind == "ours":
                argv += ["--config", args.config]
            if kind == "before":   # the same server from another checkout (e.g. main), same run
                cwd = Path(args.before).resolve()
                env["PYTHONPATH"] = str(cwd)
        elif kind == "bare":
            argv = [sys.executable, "-m", "loadtest.bare_server", "--port", str(self.port)]
        else:
            assert modules is not None
            env["NODE_PATH"] = str(modules)
            argv = ["node", str(REPO / "loadtest" / "bare_server.mjs"), "--port", str(self.port)]
        self.log = (work / f"{kind}.log").open("wb")
        self.proc = subprocess.Popen(pinned(core, argv), cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        if kind in ("ours", "before"):
            wait_healthy(self.port, self.proc)
        else:
            wait_listening(self.port, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


# ------------------------------------------------------------------------------------------------ one run


def scrape(port: int) -> dict[str, float]:
    """Totals of ours' tick counters from /metrics (ticks run, overruns, coalesced, frames written)."""
    out = {"ticks": 0.0, "overruns": 0.0, "coalesced": 0.0, "tick_frames": 0.0, "refused": 0.0}
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("gameserver_tick_duration_seconds_count"):
                out["ticks"] = max(out["ticks"], float(value))   # the busiest room ticks like any other
            elif name.startswith("gameserver_tick_overruns_total"):
                out["overruns"] += float(value)
            elif name.startswith("gameserver_coalesced_ticks_total"):
                out["coalesced"] += float(value)
            elif name.startswith("gameserver_messages_out_total") and 'type="tick"' in name:
                out["tick_frames"] += float(value)
            elif name.startswith("gameserver_logins_refused_total"):
                out["refused"] += float(value)
    return out


def pyspy_start(pid: int, out: Path, seconds: float, core: str | None) -> subprocess.Popen | None:
    """py-spy on the generator's core, sampling without pausing the server (``--nonblocking``)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
            "--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(pinned(core, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _function(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: one entry per function, not per line."""
    head, sep, where = frame.rpartition(" (")
    return f"{head} ({where.rsplit(':', 1)[0]})" if sep else frame


def pyspy_top(raw: Path, n: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and by inclusive time (% of the non-idle samples) from py-spy's raw output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_function(f) for f in stack.split(";")]   # root first, the running function last
        total += k
        own[frames[-1]] += k
        for fn in set(frames):
            incl[fn] += k
    if not total:
        return {"self": [], "inclusive": []}
    return {"self": [(fn, 100.0 * c / total) for fn, c in own.most_common(n)],
            "inclusive": [(fn, 100.0 * c / total) for fn, c in incl.most_common(n)]}


class HealthPoller:
    """Samples ours' /health twice a second in a thread while the window is open (admission state, lag)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                    self.samples.append(json.loads(resp.read()))
            except urllib.error.HTTPError as exc:   # 503 while degraded: the body still says why
                self.samples.append(json.loads(exc.read()))
            except (OSError, ValueError):
                self.samples.append({"status": "no answer"})

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        adm = [s["admission"] for s in self.samples if "admission" in s]
        lags = sorted(a.get("median_tick_lag", 0.0) for a in adm)
        busy = sorted(a.get("loop_busy", 0.0) for a in adm)
        states = Counter(s.get("status", "?") for s in self.samples)
        nan = float("nan")
        return {"health": dict(states), "median_lag_ms_p50": lags[len(lags) // 2] if lags else nan,
                "median_lag_ms_max": lags[-1] if lags else nan,
                "loop_busy_p50": busy[len(busy) // 2] if busy else nan,
                "loop_busy_max": busy[-1] if busy else nan}


def run_once(kind: str, scenario: str, players: int, args: argparse.Namespace,
             modules: Path | None) -> dict[str, Any]:
    import psutil

    work = Path(tempfile.mkdtemp(prefix=f"bench-forest-{kind}-"))
    server = Server(kind, work, args, modules)
    gen: subprocess.Popen | None = None
    spy: subprocess.Popen | None = None
    try:
        sproc = psutil.Process(server.proc.pid)
        argv = [sys.executable, "-m", "loadtest.forest_gen", "--port", str(server.port),
                "--scenario", scenario, "--players", str(players), "--residents", str(args.residents),
                "--storm", str(args.storm),
                "--rate", str(args.rate), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
                "--settle-max", str(args.settle_max), "--timeout", str(args.timeout),
                "--tick-format", args.tick_format]
        gen = subprocess.Popen(pinned(args.gen_core, argv), cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert gen.stdout is not None
        result: dict[str, Any] = {}
        cpu = rss = rss0 = 0.0
        m0 = m1 = None
        poller: HealthPoller | None = None
        for line in gen.stdout:  # bounded: the generator ends after its ramp, settle and window
            line = line.strip()
            if line == "MEASURE_START":
                sproc.cpu_percent(None)
                times0, t0 = sproc.cpu_times(), time.monotonic()
                rss0 = sproc.memory_info().rss / 2**20
                m0 = scrape(server.port) if kind in ("ours", "before") else None
                poller = HealthPoller(server.port) if kind == "ours" else None
                if args.pyspy and kind != "node":
                    spy = pyspy_start(sproc.pid, Path(args.pyspy) / f"{kind}-{scenario}-{players}.raw",
                                      args.seconds, args.gen_core)
            elif line == "MEASURE_END":
                cpu = sproc.cpu_percent(None)
                times1, elapsed = sproc.cpu_times(), time.monotonic() - t0
                result["server_user_cpu"] = 100 * (times1.user - times0.user) / elapsed
                result["server_sys_cpu"] = 100 * (times1.system - times0.system) / elapsed
                rss = sproc.memory_info().rss / 2**20
                m1 = scrape(server.port) if kind in ("ours", "before") else None
                if poller is not None:
                    result["health_window"] = poller.stop()
            elif line.startswith("{"):
                result.update(json.loads(line))
        gen.wait(timeout=60)
        if "scenario" not in result:
            raise RuntimeError(f"{kind}: the generator printed no result (exit {gen.returncode})")
        result.update({"server": kind, "server_cpu": cpu, "server_rss_mb": rss, "load_avg": os.getloadavg()})
        if scenario == "idle" and result.get("welcomed"):   # RSS growth per player that got in
            result["rss_kb_per_player"] = (rss - rss0) * 1024 / result["welcomed"]
            result["server_rss0_mb"] = rss0
        if m0 is not None and m1 is not None:
            result["server_counters"] = {k: m1[k] - m0[k] for k in m0}
        if spy is not None:
            spy.wait(timeout=args.seconds + 30)
            raw = Path(args.pyspy) / f"{kind}-{scenario}-{players}.raw"
            result["pyspy_top"] = pyspy_top(raw) if raw.exists() else {}
        return result
    finally:
        for p in (gen, spy):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


# -------------------------------------------------------------------------------------------- reporting


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:,.{digits}f}"
    return str(v)


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b and a == a and b == b:
        return f"{a / b:.2f}x"
    return ""


_CPU = ("server CPU % (one core)", "server_cpu", True)
_GEN = ("generator CPU %", "generator_cpu", False)
ROWS: dict[str, list[tuple[str, str, bool]]] = {
    # (label, result key, ratio column)
    "forest": [
        _CPU,
        ("  user %", "server_user_cpu", True),
        ("  system %", "server_sys_cpu", True),
        ("tick frames delivered %", "delivered_pct", False),
        ("move->tick p50 ms", "lat_p50_ms", True),
        ("move->tick p99 ms", "lat_p99_ms", True),
        ("tick age p99 ms", "age_p99_ms", True),
        ("failed (connect/login/drop)", "failed", False),
        ("refused logins", "refused", False),
        ("bytes per player-second", "bytes_per_player_s", True),
        ("walking players", "walking", False),
        ("moves superseded", "superseded", False),
        ("server RSS MB", "server_rss_mb", True),
        _GEN,
    ],
    "storm": [
        _CPU,
        ("failed (connect/login/drop)", "failed", False),
        ("welcomed arrivals", "welcomed", False),
        ("welcome p50 s", "welcome_p50_s", True),
        ("welcome p99 s", "welcome_p99_s", True),
        ("welcome max s", "welcome_max_s", True),
        ("welcomed after > 20 s", "welcome_over_20s", False),
        ("refused logins", "refused", False),
        ("walkers' tick age p50 ms", "age_p50_ms", True),
        ("walkers' tick age p99 ms", "age_p99_ms", True),
        ("walkers' tick age max ms", "age_max_ms", True),
        ("walkers' frames delivered %", "delivered_pct", False),
        _GEN,
    ],
    "idle": [
        ("RSS KB per idle player", "rss_kb_per_player", True),
        ("server RSS MB before", "server_rss0_mb", True),
        ("server RSS MB after", "server_rss_mb", True),
        ("welcomed", "welcomed", False),
        ("welcome p99 s", "welcome_p99_s", True),
        ("failed (connect/login/drop)", "failed", False),
        ("refused logins", "refused", False),
    ],
    "overload": [
        _CPU,
        ("walking (admitted)", "walking", False),
        ("refused logins (count)", "refused", False),
        ("still refused at the end", "still_refused", False),
        ("failed (timeouts, drops)", "failed", False),
        ("admitted: frames delivered %", "delivered_pct", False),
        ("admitted: move->tick p99 ms", "lat_p99_ms", True),
        ("admitted: tick age p99 ms", "age_p99_ms", True),
        _GEN,
    ],
}


RATIOS = (("ours", "bare"), ("before", "bare"), ("ours", "before"), ("ours", "node"))


def report(scenario: str, players: int, results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    for r in results:
        r["refused"] = sum(r.get("refusals", {}).values())
    kinds = [r["server"] for r in results]
    la = results[0]["load_avg"]
    title = {"forest": f"forest, {players} walkers at {args.rate:g} connects/s",
             "storm": f"storm, {args.storm} first logins at {args.rate:g}/s into town, "
                      f"{args.residents} walkers in forest",
             "overload": f"overload, {players} walkers at {args.rate:g} connects/s into forest",
             "idle": f"idle, {players} players logged in at {args.rate:g}/s and staying in town"}[scenario]
    by = {r["server"]: r for r in results}
    pairs = [(a, b) for a, b in RATIOS if a in by and b in by]
    header = "".join(f"{k:>12}" for k in kinds) + "".join(f"{a + '/' + b:>13}" for a, b in pairs)
    lines = [f"== {title}; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} ==", f"{'':32}{header}"]
    for label, key, with_ratio in ROWS[scenario]:
        row = f"{label:32}" + "".join(f"{_fmt(r.get(key)):>12}" for r in results)
        if with_ratio:
            row += "".join(f"{_ratio(by[a].get(key), by[b].get(key)):>13}" for a, b in pairs)
        lines.append(row)
    for r in results:
        if r.get("server_counters"):
            c = r["server_counters"]
            lines.append(f"  {r['server']} in the window: {c['ticks']:.0f} ticks, {c['overruns']:.0f} "
                         f"overruns, {c['tick_frames']:.0f} tick frames written, {c['coalesced']:.0f} "
                         f"coalesced, {c['refused']:.0f} logins refused")
        if r.get("health_window"):
            h = r["health_window"]
            lines.append(f"  {r['server']} /health in the window: {h['health']}, median tick lag p50 "
                         f"{h['median_lag_ms_p50']:.1f} ms, max {h['median_lag_ms_max']:.1f} ms; loop busy "
                         f"p50 {h.get('loop_busy_p50', 0):.2f}, max {h.get('loop_busy_max', 0):.2f}")
        if r.get("failures") or r.get("refusals"):
            lines.append(f"  {r['server']}: failures {r.get('failures')} refusals {r.get('refusals')}")
        lines += [f"  {r['server']}: {e}" for e in r.get("errors", [])[:3]]
        for kind, top in (r.get("pyspy_top") or {}).items():
            lines.append(f"  {r['server']} py-spy {kind} time (top, % of non-idle samples):")
            lines += [f"    {share:5.1f}%  {fn}" for fn, share in top]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_forest", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", choices=["forest", "storm", "overload", "idle"], default="forest")
    p.add_argument("--players", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="walker counts (forest default 500,1000; overload default 3000); idle players "
                        "(idle default 2000)")
    p.add_argument("--tick-format", choices=["v1", "compact"], default="v1",
                   help="tick encoding the players ask for (compact: integer tenths, if the server agrees)")
    p.add_argument("--servers", default="ours,bare", help="comma list of ours, bare, node")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20.0, help="measured window (forest, overload)")
    p.add_argument("--warmup", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=200.0, help="connects per second")
    p.add_argument("--residents", type=int, default=200)
    p.add_argument("--storm", type=int, default=2000)
    p.add_argument("--settle-max", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--config", default=None, help="config file for ours (default: none = default config)")
    p.add_argument("--before", default=None, help="checkout dir of an older version: server kind 'before' "
                   "(e.g. --servers ours,before,bare --before /tmp/main)")
    p.add_argument("--server-core", default="0")
    p.add_argument("--gen-core", default="1")
    p.add_argument("--pyspy", default=None,
                   help="dir: record the Python servers with py-spy during the window")
    p.add_argument("--together", action="store_true",
                   help="run the servers at the same time (paired A/B on a noisy machine, see above)")
    p.add_argument("--json", action="store_true", help="print results as JSON lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_fd_limit()
    if args.pyspy:
        Path(args.pyspy).mkdir(parents=True, exist_ok=True)
    counts = args.players or {"overload": [3000], "idle": [2000]}.get(args.scenario, [500, 1000])
    if args.scenario == "storm":
        counts = [args.residents]
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    modules = None
    if "node" in kinds:
        modules = node_modules(Path(tempfile.gettempdir()) / "gamebackend-bench-node")
        if modules is None:
            print("node baseline skipped: node/npm not available", file=sys.stderr)
            kinds.remove("node")
    for _ in range(args.repeat):
        for n in counts:
            if args.together:
                with ThreadPoolExecutor(len(kinds)) as pool:
                    results = list(pool.map(
                        lambda kind, n=n: run_once(kind, args.scenario, n, args, modules), kinds))
            else:
                results = [run_once(kind, args.scenario, n, args, modules) for kind in kinds]
            if args.json:
                for r in results:
                    print(json.dumps(r), flush=True)
            else:
                print(report(args.scenario, n, results, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
