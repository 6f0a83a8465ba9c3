"""CI smoke run: a real server subprocess, locust headless with 100 users for ~20 s, zero failures.

Checked per message type, not only overall: every expected entry has successes and no failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.locust_client import WSClient, WSClosed, tick_ts
from loadtest.procs import free_port, stop_process, wait_healthy
from loadtest.profiles import PROFILES, secret_for, select_profile, unique_name
from shared.codec import encode_raw

REPO = Path(__file__).resolve().parents[2]
EXPECTED = ("connect", "login", "join", "ping", "tick_age")


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


@contextlib.contextmanager
def serving(tmp_path: Path, **env: str) -> Iterator[int]:
    """A ``gameserver serve`` subprocess on a free port with a fresh data dir (``env``: extra variables,
    e.g. ``GAMESERVER_LIMITS__MAX_SESSIONS``); yields the port once /health answers."""
    port = free_port()
    server_log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gameserver.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data", str(tmp_path / "data")],
        cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1", **env), stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(port, server)
        yield port
    finally:
        stop_process(server)
        server_log.close()


Stats = dict[str, dict[str, str]]


def run_locust(port: int, csv_prefix: Path, users: int, rate: int, seconds: int, stop_timeout: int,
               timeout: int, **env: str) -> tuple[subprocess.CompletedProcess[str], Stats]:
    """README's headless locust run against ``port``; returns the process and its per-entry stats."""
    locust = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless",
         "-u", str(users), "-r", str(rate), "-t", f"{seconds}s", "--stop-timeout", str(stop_timeout),
         "--host", f"ws://127.0.0.1:{port}", "--csv", str(csv_prefix), "--only-summary",
         "--loglevel", "WARNING"],
        cwd=REPO, env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout,
    )
    return locust, read_stats(Path(f"{csv_prefix}_stats.csv"))


def test_tick_ts_reads_ts_of_server_ticks_without_decoding() -> None:
    for n in (0, 127, 200, 70_000, 2**33):
        frame = encode_raw({"t": "tick", "n": n, "ts": 1795752986.125, "moved": [[1, 2.0, 3.0]]})
        assert tick_ts(frame) == 1795752986.125
    assert tick_ts(encode_raw({"t": "pong", "ts": 1.0})) is None
    assert tick_ts(encode_raw({"t": "tick", "ts": 1.0, "n": 1})) is None  # other key order: full decode
    assert tick_ts(b"\x00" * 20) is None


def test_unique_names_fit_the_protocol_and_secrets_are_stable() -> None:
    names = {unique_name(host="worker-host", pid=4_194_304) for _ in range(1000)}
    assert len(names) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_]{3,16}", n) for n in names)
    assert secret_for("abc") == secret_for("abc") and 16 <= len(secret_for("abc")) <= 128


def test_select_profile_prefers_game_profile_then_locust_profile() -> None:
    class Opts:
        game_profile = ""
        profile = "casual"

    assert select_profile(Opts()) == "casual"
    Opts.game_profile = "busy"
    assert select_profile(Opts()) == "busy"
    assert set(PROFILES) == {"busy", "casual"}


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A websockets echo server in a thread (answers b"close" with a 1001 close)."""
    from websockets.asyncio.server import serve

    ready = threading.Event()
    state: dict[str, object] = {}

    async def handler(ws: object) -> None:
        async for msg in ws:  # type: ignore[attr-defined]
            if msg == b"close":
                await ws.close(1001, "going away")  # type: ignore[attr-defined]
                return
            await ws.send(msg)  # type: ignore[attr-defined]

    async def main() -> None:
        stop = asyncio.Event()
        state["stop"], state["loop"] = stop, asyncio.get_running_loop()
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=2**22) as server:
            state["port"] = next(iter(server.sockets)).getsockname()[1]
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield int(state["port"])  # type: ignore[call-overload]
    loop = state["loop"]
    loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)


def test_ws_client_round_trips_small_medium_large_and_text(echo_server: int) -> None:
    ws = WSClient.connect(f"ws://127.0.0.1:{echo_server}/ws", timeout=5)
    for payload in (b"x", b"a" * 125, b"b" * 126, b"c" * 70_000):
        ws.send_binary(payload)
        assert ws.recv_frame() == (2, payload)
    ws.send_text("héllo")
    assert ws.recv_frame() == (1, "héllo".encode())
    ws.send_binary(b"close")
    with pytest.raises(WSClosed) as info:
        ws.recv_frame()
    assert info.value.code == 1001
    ws.close()


@pytest.mark.slow
def test_locust_headless_100_users_no_failures(tmp_path: Path) -> None:
    with serving(tmp_path) as port:
        locust, stats = run_locust(port, tmp_path / "run", 100, 50, 20, 5, 120, GAME_PROFILE="busy")
        report = "\n".join(
            f"{name}: {row['Request Count']} requests, {row['Failure Count']} failed"
            for name, row in stats.items()
        )
        failures = {name: row for name, row in stats.items() if int(row["Failure Count"]) > 0}
        assert not failures, f"failed requests:\n{report}\n{locust.stderr[-3000:]}"
        for name in EXPECTED:
            assert name in stats, f"no {name!r} entry:\n{report}"
            assert int(stats[name]["Request Count"]) > 0, f"{name} never succeeded:\n{report}"
        assert int(stats["login"]["Request Count"]) >= 100
        assert int(stats["tick_age"]["Request Count"]) > 1000
        assert locust.returncode == 0, locust.stderr[-3000:]


@pytest.mark.slow
def test_locust_users_resume_after_cutting_their_sockets_without_seq_failures(tmp_path: Path) -> None:
    """--drop-every: each user resets its own TCP connection every ~2 s and resumes with its last seq."""
    with serving(tmp_path) as port:
        locust, stats = run_locust(port, tmp_path / "run", 30, 30, 12, 5, 90, GAME_PROFILE="busy",
                                   GAME_DROP_EVERY="2")
        report = "\n".join(f"{name}: {row['Request Count']} ok, {row['Failure Count']} failed"
                           for name, row in stats.items())
        failures = {name: row for name, row in stats.items() if int(row["Failure Count"]) > 0}
        assert not failures, f"failed requests:\n{report}\n{locust.stderr[-3000:]}"
        assert int(stats["drop"]["Request Count"]) >= 30, report
        assert int(stats["resume"]["Request Count"]) >= 30, report      # resumed, not logged in again
        assert int(stats["login"]["Request Count"]) == 30, report
        assert "seq:gap" not in stats and "seq:duplicate" not in stats
        assert locust.returncode == 0, locust.stderr[-3000:]


@pytest.mark.slow
def test_locust_users_refused_by_a_full_server_wait_it_out_without_failures(tmp_path: Path) -> None:
    """40 users, room for 15: the rest get `login:server_full` (not a failure) and keep retrying."""
    with serving(tmp_path, GAMESERVER_LIMITS__MAX_SESSIONS="15",
                 GAMESERVER_LIMITS__FULL_RETRY_AFTER="1.0") as port:
        locust, stats = run_locust(port, tmp_path / "run", 40, 40, 12, 3, 90, GAME_PROFILE="casual")
        report = "\n".join(f"{n}: {r['Request Count']} requests, {r['Failure Count']} failed"
                           for n, r in stats.items())
        assert int(stats["Aggregated"]["Failure Count"]) == 0, report
        # the cap is checked when a login starts and when its hashing starts: one in flight may pass
        assert 15 <= int(stats["login"]["Request Count"]) <= 17, report
        assert int(stats["login:server_full"]["Request Count"]) >= 25, report   # each of 25 refused, retrying
        assert locust.returncode == 0, locust.stderr[-3000:]


def test_bench_server_room_sizes_and_histogram_quantiles() -> None:
    from loadtest.bench_server import hist_quantile, room_side

    assert room_side(500, 50) == 2500 and room_side(1000, 50) == 3500 and room_side(10, 50) == 750
    before = {0.01: 0.0, 0.02: 0.0, float("inf"): 0.0}
    after = {0.01: 50.0, 0.02: 100.0, float("inf"): 100.0}
    assert hist_quantile(before, after, 0.5) == pytest.approx(0.01)
    assert hist_quantile(before, after, 0.75) == pytest.approx(0.015)


def test_capacity_summary_names_the_highest_passing_step() -> None:
    from loadtest.capacity import StepResult, format_row, summary

    ok = StepResult(1000, 1000, 1.0, 2.0, 1, 5, 2, 9, 50, 70, 0)
    bad = StepResult(2000, 1990, None, None, 90, 300, 20, 400, 99, 90, 3, "3 failures")
    assert "**1000 players**" in summary([ok, bad], 250) and "Stopped at 2000" in summary([ok, bad], 250)
    assert "| n/a | n/a |" in format_row(bad)


def test_capacity_report_keeps_the_hand_written_part_after_the_marker(tmp_path: Path) -> None:
    from loadtest.capacity import GENERATED_END, StepResult, build_parser, write_report

    out = tmp_path / "capacity.md"
    out.write_text("# old table" + GENERATED_END + "\n## Notes written by hand\n")
    args = build_parser().parse_args(["--out", str(out)])
    row = StepResult(500, 500, 1.0, 2.0, 1, 5, 2, 9, 50, 70, 0, delivered_pct=99.5, refused=3, rate=50,
                     admitted=480)
    write_report([row], args, "python -m loadtest.capacity")
    text = out.read_text()
    assert "# old table" not in text and text.endswith(GENERATED_END + "\n## Notes written by hand\n")
    assert "| 500 | 480 | 50 |" in text and "| 99.5 |" in text and "| 3 | 0 |" in text
