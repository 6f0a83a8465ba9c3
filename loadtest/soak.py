"""Soak test (not in CI): many bots for a long time against a server subprocess; resources must stay flat.

    python -m loadtest.soak [--bots 1000] [--minutes 30] [--interval 10] [--out soak-out] [--tolerance 0.2]

Starts ``python -m gameserver serve`` on a free port with a fresh data dir (``durability=fsync``), runs
``loadtest.bots.run_bots`` in this process, and every ``--interval`` seconds samples the server's RSS, open
files (``psutil.num_fds``), CPU and ``/health`` (tick lag, sessions). Writes ``soak.md`` (a Markdown table of
the samples plus a verdict), ``soak.png`` (matplotlib, Agg) and ``samples.json`` to ``--out``, and prints for
each series whether it stayed flat: the mean of the last third of the samples after ``--warmup`` seconds is
within ``--tolerance`` (relative) of the mean of the first third (tick lag: or within 5 ms absolute).
Every loop ends by itself: the run stops after ``--minutes`` and the server is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from loadtest.bots import run_bots
from loadtest.procs import free_port

CONFIG = """\
log_level = "WARNING"
[auth]
token_secret = "soak-token-secret-0123456789"
[limits]
max_connections = 20000
"""


@dataclass
class Sample:
    t: float           # seconds since start
    rss_mib: float
    fds: int
    cpu_pct: float
    tick_lag_ms: float
    sessions: int
    connections: int


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    cfg = workdir / "server.toml"
    cfg.write_text(CONFIG)
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gameserver", "serve", "--data", str(workdir / "data"), "--port", str(port),
         "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {workdir / 'server.log'}")
        try:
            if health(port).get("status") == "ok":
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start within 30 s")


def flat(values: list[float], tolerance: float, absolute: float = 0.0) -> tuple[bool, float, float]:
    """(flat?, first-third mean, last-third mean)."""
    if len(values) < 3:
        return True, values[0] if values else 0.0, values[-1] if values else 0.0
    k = max(1, len(values) // 3)
    first = sum(values[:k]) / k
    last = sum(values[-k:]) / k
    ok = last <= first * (1 + tolerance) or last - first <= absolute
    return ok, first, last


async def sample_loop(proc: psutil.Process, port: int, start: float, interval: float, until: float,
                      samples: list[Sample]) -> None:
    proc.cpu_percent(None)
    while time.monotonic() < until:
        await asyncio.sleep(min(interval, max(0.0, until - time.monotonic())))
        try:
            h = await asyncio.to_thread(health, port)
            mem = proc.memory_info().rss / 2**20
            s = Sample(round(time.monotonic() - start, 1), round(mem, 1), proc.num_fds(),
                       round(proc.cpu_percent(None), 1), float(h["tick_lag"]), int(h["sessions"]),
                       int(h.get("connections", 0)))
        except (OSError, psutil.Error) as exc:
            print(f"sample failed: {exc!r}", flush=True)
            continue
        samples.append(s)
        print(f"t={s.t:7.1f}s rss={s.rss_mib:7.1f} MiB fds={s.fds:5d} cpu={s.cpu_pct:5.1f}% "
              f"lag={s.tick_lag_ms:6.1f} ms sessions={s.sessions}", flush=True)


def write_outputs(out: Path, samples: list[Sample], verdicts: dict[str, tuple[bool, float, float]],
                  args: argparse.Namespace, report: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.json").write_text(json.dumps([asdict(s) for s in samples], indent=1))
    lines = [f"# Soak: {args.bots} bots for {args.minutes} min (sample every {args.interval} s)", "",
             "| t (s) | RSS (MiB) | open fds | CPU % | tick lag (ms) | sessions | connections |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s.t} | {s.rss_mib} | {s.fds} | {s.cpu_pct} | {s.tick_lag_ms} | {s.sessions} | "
              f"{s.connections} |" for s in samples]
    lines += ["", f"Flat = last-third mean within {args.tolerance:.0%} of first-third mean "
              f"(after {args.warmup} s warm-up; tick lag also flat within 5 ms).", "",
              "| series | first third | last third | flat |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {a:.1f} | {b:.1f} | {'yes' if ok else 'NO'} |"
              for name, (ok, a, b) in verdicts.items()]
    if report is not None:
        lines += ["", f"Bots: logged in {report.logged_in}/{report.players}, kills {report.kills}, "
                  f"xp {report.xp_gained}, ping p50 {report.rtt_p50_ms:.1f} ms "
                  f"p99 {report.rtt_p99_ms:.1f} ms, "
                  f"drops {report.drops}, errors {len(report.errors)}"]
    (out / "soak.md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [s.t / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for ax, (label, vals) in zip(axes, [
        ("RSS (MiB)", [s.rss_mib for s in samples]), ("open fds", [s.fds for s in samples]),
        ("tick lag (ms)", [s.tick_lag_ms for s in samples]), ("sessions", [s.sessions for s in samples]),
    ], strict=True):
        ax.plot(ts, vals, marker=".")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"soak: {args.bots} bots, {args.minutes} min")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=90)
    plt.close(fig)


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    server = start_server(workdir, port)
    ps = psutil.Process(server.pid)
    start = time.monotonic()
    duration = args.minutes * 60
    samples: list[Sample] = []
    report = None
    try:
        sampler = asyncio.create_task(
            # stop sampling just before the bots' deadline: their closing sockets are not a leak
            sample_loop(ps, port, start, args.interval, start + duration - min(2.0, args.interval / 2),
                        samples))
        report = await run_bots(f"ws://127.0.0.1:{port}/ws", args.bots, duration, room=args.room,
                                ramp=args.ramp)
        await sampler
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    steady = [s for s in samples if s.t >= args.warmup] or samples
    verdicts = {
        "rss_mib": flat([s.rss_mib for s in steady], args.tolerance),
        "fds": flat([float(s.fds) for s in steady], args.tolerance),
        "tick_lag_ms": flat([s.tick_lag_ms for s in steady], args.tolerance, absolute=5.0),
    }
    out = Path(args.out)
    write_outputs(out, samples, verdicts, args, report)
    print(f"\nbots: {report}" if report is not None else "")
    for name, (ok, first, last) in verdicts.items():
        print(f"{name:12s} first third {first:8.1f}  last third {last:8.1f}  {'flat' if ok else 'NOT FLAT'}")
    print(f"server exit code {server.returncode}; outputs in {out}/ (soak.md, soak.png, samples.json); "
          f"server log {workdir / 'server.log'}")
    return 0 if all(ok for ok, _, _ in verdicts.values()) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bots", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds of ramp/warm-up left out of the verdict")
    p.add_argument("--ramp", type=float, default=30.0, help="seconds over which bots start")
    p.add_argument("--room", default="forest")
    p.add_argument("--tolerance", type=float, default=0.2)
    p.add_argument("--out", default="soak-out")
    args = p.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
