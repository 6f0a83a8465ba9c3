"""Capacity report: ramp locust players against one server until tick age or errors say stop.

    python -m loadtest.capacity --profile casual --max-players 4000 --step-seconds 40

Starts the server (`taskset -c 0`, fresh embedded datastore in a temp dir), then one locust run (`taskset
-c 1`, `--processes`) whose load shape climbs 500, 1000, 2000, 4000 ... users, holding each step for
`--step-seconds`. In the last `--window` seconds of every step it samples the server (CPU % and RSS with
psutil, messages in/out from /metrics) and locust's current percentiles (ping round trip, tick age).
It stops after the first step whose p99 tick age exceeds `--max-tick-age` ms or that had failures, then
writes a Markdown table to `--out` (docs/capacity.md) and a chart to `--png` (docs/capacity.png).

Before the staircase, a fast-ramp step on its own fresh server (`--fast-ramp 2000 --fast-rate 200`: the
README's `-u 2000 -r 200`) shows what a crowd arriving at once gets. Every step also counts the tick
frames that arrived (locust's rate of `tick_age` entries) against admitted players x tick rate (every area
changes every tick with hundreds of players per room), not only the age of those that arrived, and
the logins the server refused (`login:busy`, `login:server_full`: not failures, the users retry).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from loadtest.procs import pinned, raise_fd_limit, server_port, stop_process, wait_healthy

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
SHAPE = REPO / "loadtest" / "capacity_shape.py"


@dataclass
class StepResult:
    players: int
    users_seen: int
    msgs_in_s: float | None  # None: the server's /metrics did not answer
    msgs_out_s: float | None
    rtt_p50: float
    rtt_p99: float
    tick_age_p50: float
    tick_age_p99: float
    server_cpu: float
    server_rss_mb: float
    failures: int
    note: str = ""
    delivered_pct: float | None = None  # tick frames received per second / (admitted x tick rate)
    refused: int = 0  # logins answered busy / server_full in the window
    rate: float = 0.0  # spawn rate of the step (users/s)
    admitted: int = 0  # sessions on the server (users the admission control let in)


def start_server(
    port: int, data_dir: Path, config: str | None, core: str | None, log: Path
) -> subprocess.Popen:
    argv = [sys.executable, "-m", "gameserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data", str(data_dir), "--log-level", "WARNING"]
    if config:
        argv += ["--config", config]
    with log.open("wb") as fh:
        return subprocess.Popen(pinned(core, argv), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process group of `proc` (started with start_new_session), SIGKILL what remains."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def scrape_counters(port: int) -> dict[str, float] | None:
    """Totals of the server's message counters and its session count from /metrics (None when it does not
    answer in 5 s)."""
    totals = {"in": 0.0, "out": 0.0, "sessions": 0.0}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("gameserver_messages_in_total"):
            totals["in"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("gameserver_messages_out_total"):
            totals["out"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("gameserver_sessions "):
            totals["sessions"] = float(line.rsplit(" ", 1)[1])
    return totals


def latest_rows(history: Path) -> dict[str, dict[str, str]]:
    """Last row per entry name of locust's stats history CSV ({} while it does not exist)."""
    rows: dict[str, dict[str, str]] = {}
    if not history.exists():
        return rows
    with history.open(newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["Name"]] = row
    return rows


def _num(row: dict[str, str] | None, col: str) -> float:
    if not row:
        return 0.0
    try:
        return float(row.get(col, "0"))
    except ValueError:
        return 0.0


def _failures(rows: dict[str, dict[str, str]]) -> int:
    return int(_num(rows.get("Aggregated"), "Total Failure Count"))


def _sleep_until(t: float, locust: subprocess.Popen) -> bool:
    """Sleep until monotonic time t; False if locust ended first."""
    while time.monotonic() < t:
        if locust.poll() is not None:
            return False
        time.sleep(min(0.5, max(0.0, t - time.monotonic())))
    return True


def _count(rows: dict[str, dict[str, str]], name: str) -> float:
    return _num(rows.get(name), "Total Request Count")


def run_capacity(args: argparse.Namespace, steps: list[int], rate: float, stop_on_note: bool = True,
                 label: str = "") -> list[StepResult]:
    """One locust run against one fresh server, climbing ``steps`` at ``rate`` users/s."""
    work = Path(tempfile.mkdtemp(prefix="capacity-"))
    port = server_port()
    server = start_server(port, work / "data", args.config, args.server_core, work / "server.log")
    results: list[StepResult] = []
    locust: subprocess.Popen | None = None
    try:
        wait_healthy(port, server)
        proc = psutil.Process(server.pid)
        with contextlib.suppress(psutil.Error):
            children = proc.children(recursive=True)  # taskset execs in place; children only if wrapped
            if children:
                proc = children[0]
        prefix = work / "run"
        env = dict(os.environ, CAPACITY_STEPS=",".join(map(str, steps)),
                   CAPACITY_STEP_SECONDS=str(args.step_seconds), CAPACITY_SPAWN_RATE=str(rate))
        argv = [sys.executable, "-m", "locust", "-f", f"{LOCUSTFILE},{SHAPE}", "--headless",
                "--host", f"ws://127.0.0.1:{port}", "--csv", str(prefix), "--csv-full-history",
                "--game-profile", args.profile, "--room", args.room, "--only-summary",
                "--loglevel", "WARNING", "--stop-timeout", "5"]
        if args.workers > 0:
            argv += ["--processes", str(args.workers)]
        locust_log = (work / "locust.log").open("wb")
        # own session: the workers that `--processes` forks are stopped with the master (killpg)
        locust = subprocess.Popen(pinned(args.locust_core, argv), cwd=REPO, env=env,
                                  stdout=locust_log, stderr=subprocess.STDOUT, start_new_session=True)
        history = Path(f"{prefix}_stats_history.csv")
        deadline = time.monotonic() + 60
        while not history.exists() and time.monotonic() < deadline and locust.poll() is None:
            time.sleep(0.2)
        t0 = time.monotonic()
        failures_before = 0
        for i, players in enumerate(steps):
            step_end = t0 + (i + 1) * args.step_seconds - 1.5
            if not _sleep_until(step_end - args.window, locust):
                break
            c0 = scrape_counters(port)
            rows0 = latest_rows(history)
            proc.cpu_percent(None)
            w0 = time.monotonic()
            if not _sleep_until(step_end, locust):
                break
            cpu = proc.cpu_percent(None)
            rss = proc.memory_info().rss / 2**20
            c1 = scrape_counters(port)
            dt = max(time.monotonic() - w0, 1e-9)
            rows = latest_rows(history)
            failures = _failures(rows) - failures_before
            failures_before += failures
            users = int(_num(rows.get("Aggregated"), "User Count"))
            # players in rooms: the users the server let in (refused ones wait and get no ticks)
            admitted = min(c0["sessions"], c1["sessions"]) if c0 and c1 else float(users)
            # locust's current rate of tick_age entries (its average over the last 10 s): the history rows
            # themselves carry whole-second timestamps, too coarse to difference over a 10 s window
            frames_s = _num(rows.get("tick_age"), "Requests/s")
            refused = sum(_count(rows, n) - _count(rows0, n) for n in ("login:busy", "login:server_full"))
            res = StepResult(
                players=players,
                users_seen=users,
                msgs_in_s=(c1["in"] - c0["in"]) / dt if c0 and c1 else None,
                msgs_out_s=(c1["out"] - c0["out"]) / dt if c0 and c1 else None,
                rtt_p50=_num(rows.get("ping"), "50%"),
                rtt_p99=_num(rows.get("ping"), "99%"),
                tick_age_p50=_num(rows.get("tick_age"), "50%"),
                tick_age_p99=_num(rows.get("tick_age"), "99%"),
                server_cpu=cpu,
                server_rss_mb=rss,
                failures=failures,
                delivered_pct=100.0 * frames_s / (admitted * args.tick_rate) if admitted else None,
                admitted=int(admitted),
                refused=int(refused),
                rate=rate,
            )
            if res.tick_age_p99 > args.max_tick_age:
                res.note = f"p99 tick age > {args.max_tick_age:g} ms"
            if failures:
                res.note = (res.note + "; " if res.note else "") + f"{failures} failures"
            if res.msgs_in_s is None:
                res.note = (res.note + "; " if res.note else "") + "/metrics did not answer"
            if res.users_seen < players * 0.98:   # locust itself could not run them all
                res.note = (res.note + "; " if res.note else "") + f"only {res.users_seen} users running"
            if label:
                res.note = label + ("; " + res.note if res.note else "")
            results.append(res)
            print(format_row(res), flush=True)
            if res.note and stop_on_note:
                break
    finally:
        if locust is not None:
            stop_group(locust)
        stop_process(server)
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results


GENERATED_END = "\n<!-- end of the part generated by loadtest/capacity.py; what follows is kept -->\n"
HEADER = ("| players | admitted | spawn/s | msgs/s in | msgs/s out | rtt p50 ms | rtt p99 ms "
          "| tick age p50 ms | tick age p99 ms | tick frames delivered % | server CPU % | server RSS MB "
          "| refused logins | failures | note |")


def _rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def format_row(r: StepResult) -> str:
    delivered = "n/a" if r.delivered_pct is None else f"{r.delivered_pct:.1f}"
    return (f"| {r.players} | {r.admitted} | {r.rate:g} | {_rate(r.msgs_in_s)} | {_rate(r.msgs_out_s)} | "
            f"{r.rtt_p50:.0f} | {r.rtt_p99:.0f} | {r.tick_age_p50:.0f} | {r.tick_age_p99:.0f} | "
            f"{delivered} | {r.server_cpu:.0f} | {r.server_rss_mb:.0f} | {r.refused} | {r.failures} | "
            f"{r.note} |")


def summary(results: list[StepResult], max_tick_age: float) -> str:
    """The staircase's highest passing step (fast-ramp rows, noted ``fast ramp``, are not steps of it)."""
    results = [r for r in results if not r.note.startswith("fast ramp")]
    good = [r for r in results if not r.note]
    if not good:
        return "No step passed (p99 tick age within the limit and zero failures)."
    best = good[-1]
    let_in = ""
    if 0 < best.admitted < best.players:
        let_in = f", {best.admitted} admitted, the rest refused and retrying"
    text = (f"Highest passing step: **{best.players} players**{let_in} (p99 tick age "
            f"{best.tick_age_p99:.0f} ms <= {max_tick_age:g} ms, zero failures, server CPU "
            f"{best.server_cpu:.0f} %).")
    failed = [r for r in results if r.note]
    if failed:
        text += f" Stopped at {failed[0].players}: {failed[0].note}."
    return text


def write_report(results: list[StepResult], args: argparse.Namespace, command: str) -> None:
    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    lines = [
        "# Capacity (generated by `loadtest/capacity.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu_model}); profile "
        f"`{args.profile}`, rooms `{args.room}`, {args.step_seconds:g} s per step, spawn rate "
        f"{args.spawn_rate:g}/s, measured over the last {args.window:g} s of each step. Server pinned to "
        f"core {args.server_core}, locust ({args.workers} worker process(es)) pinned to core "
        f"{args.locust_core}; load average at the end {os.getloadavg()[0]:.2f} (the box is shared: figures "
        "near saturation swing from run to run).",
        "",
        f"    {command}",
        "",
        "Round trip = `ping` request to `pong` reply; tick age = receive time minus the tick's server `ts`;",
        "msgs/s = the server's `gameserver_messages_in/out` counters; percentiles are locust's over the",
        "window. Admitted = the server's sessions (users let in); tick frames delivered = locust's rate of",
        "`tick_age` entries (last 10 s) / (admitted x tick rate).",
        "Refused logins = `login:busy` + `login:server_full` answers in the window (admission control: the",
        "users wait `retry_after` and try again; not failures). The first row (fast ramp) is its own run on",
        "a fresh server: the README's `-u 2000 -r 200`.",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[format_row(r) for r in results],
        "",
        summary(results, args.max_tick_age),
        "",
        "![latency vs players](capacity.png)",
        "",
    ]
    out = Path(args.out)
    kept = ""   # a hand-written part after the marker survives regeneration
    if out.exists() and GENERATED_END in out.read_text():
        kept = out.read_text().split(GENERATED_END, 1)[1]
    out.write_text("\n".join(lines) + GENERATED_END + kept)


def write_chart(results: list[StepResult], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r.players for r in results]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax1.plot(xs, [r.rtt_p50 for r in results], "o-", label="ping rtt p50")
    ax1.plot(xs, [r.rtt_p99 for r in results], "o-", label="ping rtt p99")
    ax1.plot(xs, [r.tick_age_p50 for r in results], "s--", label="tick age p50")
    ax1.plot(xs, [r.tick_age_p99 for r in results], "s--", label="tick age p99")
    ax1.axhline(250, color="red", lw=0.8, ls=":", label="250 ms")
    ax1.set_ylabel("ms")
    ax1.set_yscale("symlog", linthresh=10)
    ax1.set_ylim(bottom=0)
    ax1.legend()
    ax1.set_title(title)
    ax2.plot(xs, [r.server_cpu for r in results], "o-", color="tab:green", label="server CPU %")
    ax2.set_ylabel("server CPU % (one core)")
    ax2.set_xlabel("players")
    ax2.legend(loc="upper left")
    ax3 = ax2.twinx()
    ax3.plot(xs, [r.server_rss_mb for r in results], "^-", color="tab:purple", label="server RSS MB")
    ax3.set_ylabel("RSS MB")
    ax3.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=["busy", "casual"], default="casual")
    p.add_argument("--room", default="forest,dungeon,town", help="room(s) users join (comma list spreads)")
    p.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")],
                   default=[500, 1000, 2000, 4000, 8000], help="user counts to climb through")
    p.add_argument("--max-players", type=int, default=4000)
    p.add_argument("--step-seconds", type=float, default=40.0)
    p.add_argument("--window", type=float, default=10.0, help="seconds measured at the end of each step")
    p.add_argument("--spawn-rate", type=float, default=100.0)
    p.add_argument("--fast-ramp", type=int, default=2000, help="users of the fast-ramp step (0: skip it)")
    p.add_argument("--fast-rate", type=float, default=200.0, help="spawn rate of the fast-ramp step")
    p.add_argument("--tick-rate", type=float, default=20.0, help="the server's ticks per second")
    p.add_argument("--workers", type=int, default=1, help="locust worker processes (0 = no --processes)")
    p.add_argument("--max-tick-age", type=float, default=250.0, help="ms; stop after a step above this")
    p.add_argument("--server-core", default="0")
    p.add_argument("--locust-core", default="1")
    p.add_argument("--config", default=None, help="server config file (TOML), e.g. a bigger world")
    p.add_argument("--out", default=str(REPO / "docs" / "capacity.md"))
    p.add_argument("--png", default=str(REPO / "docs" / "capacity.png"))
    p.add_argument("--keep", action="store_true", help="keep the temp dir with logs and CSVs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.window >= args.step_seconds - 2:
        print("--window must be shorter than --step-seconds - 2", file=sys.stderr)
        return 2
    command = "python -m loadtest.capacity " + " ".join(argv if argv is not None else sys.argv[1:])
    raise_fd_limit()
    print(HEADER, flush=True)
    results: list[StepResult] = []
    if args.fast_ramp > 0:
        results += run_capacity(args, [args.fast_ramp], args.fast_rate, stop_on_note=False, label="fast ramp")
    results += run_capacity(args, [n for n in args.steps if n <= args.max_players], args.spawn_rate)
    if not results:
        print("no step completed", file=sys.stderr)
        return 1
    write_report(results, args, command.strip())
    write_chart([r for r in results if not r.note.startswith("fast ramp")], args.png,
                f"{args.profile} players vs latency ({args.room})")
    print(f"wrote {args.out} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
