"""Smoke test of the datastore benchmark: the quick run works end to end and prints every figure.

Only checks that the script runs and reports; the figures themselves depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the benchmark module as a user would, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "loadtest.bench_datastore", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_quick_benchmark_prints_every_workload_with_sqlite_baseline_and_ratio() -> None:
    result = run_bench()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("machine: ") and "cores" in out
    for workload in ("get", "put memory", "put flush", "put fsync", "cas incr", "operate", "recovery"):
        assert workload in out, f"{workload!r} missing from:\n{out}"
    assert "p99" in out and "per million" in out and "MB of log" in out
    assert out.count("x ") >= 5, f"ratios missing:\n{out}"


def test_quick_benchmark_json_has_positive_figures() -> None:
    result = run_bench("--json", "--records", "5000")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["machine"]["cores"] >= 1
    rows = {r["workload"].split(" (")[0].split(" vs ")[0]: r for r in report["results"]}
    assert {
        "get",
        "put memory",
        "put flush",
        "put fsync",
        "cas incr",
        "operate incr+append+read",
        "recovery",
    } <= set(rows)
    for row in report["results"]:
        assert row["ours"] > 0
    assert rows["put fsync"]["extra"]["p99_ms"] > 0
    assert rows["get"]["ratio"] > 0
