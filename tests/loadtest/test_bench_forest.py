"""Smoke run of the forest benchmark at toy scale: ours and the bare baseline, every figure present.

Only checks that the tool runs end to end and that the figures are sane; they depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench_forest import pyspy_top
from loadtest.procs import ephemeral_range, server_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_forest_benchmark_at_toy_scale_prints_ours_and_bare_with_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_forest", "--players", "12", "--seconds", "2", "--warmup", "1",
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {r["server"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == {"ours", "bare"}
    for r in rows.values():
        assert r["walking"] == 12 and r["failed"] == 0 and r["refusals"] == {}
        assert r["delivered_pct"] > 80 and r["lat_samples"] > 50 and r["bytes_per_player_s"] > 100
        assert 0 < r["lat_p99_ms"] < 2000 and r["server_cpu"] > 0
    assert rows["ours"]["server_counters"]["ticks"] >= 30   # 20 Hz over the 2 s window
    assert rows["ours"]["health_window"]["health"]


def test_server_ports_stay_below_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    assert all(not low <= server_port() <= high for _ in range(20))


def test_pyspy_top_counts_self_and_inclusive_time_per_function(tmp_path: Path) -> None:
    raw = tmp_path / "x.raw"
    raw.write_text("main (a.py:1);tick (b.py:10);send (c.py:5) 30\n"
                   "main (a.py:2);tick (b.py:11) 10\n"
                   "main (a.py:1);read (d.py:3) 60\n")
    top = pyspy_top(raw)
    assert dict(top["self"]) == {"read (d.py)": 60.0, "send (c.py)": 30.0, "tick (b.py)": 10.0}
    assert dict(top["inclusive"])["main (a.py)"] == 100.0 and dict(top["inclusive"])["tick (b.py)"] == 40.0
