"""Helpers for the fault, abuse and crash tests: a real server as a subprocess (``python -m gameserver
serve``) on a free port with a TOML config and a file datastore in ``tmp_path``, sizing by environment,
and small statistics helpers.

Sizes: every test has a CI size and the issue's full size; ``RELIABILITY_SCALE=full`` picks the full
sizes, and single figures can be overridden (``RELIABILITY_BOTS``, ``RELIABILITY_FUZZ_FRAMES``, ...).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from gameserver.config import deep_merge
from loadtest.procs import free_port
from tests.support import config_dict, to_toml

FULL = os.environ.get("RELIABILITY_SCALE", "ci").lower() == "full"
REPO = Path(__file__).resolve().parents[2]


def sized(env: str, ci: int, full: int) -> int:
    """A test size: ``$env`` if set, else the full size under ``RELIABILITY_SCALE=full``, else ``ci``."""
    raw = os.environ.get(env)
    if raw:
        return int(raw)
    return full if FULL else ci


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def server_config(**sections: Any) -> dict[str, Any]:
    """Config of a subprocess server (``tests.support.config_dict``, 20 Hz ticks, 10 s grace); written
    as TOML by ``ServerProcess``."""
    return deep_merge(config_dict(auth={"grace_seconds": 10.0}, game={"tick_rate": 20.0}), sections)


# --------------------------------------------------------------------------------- server subprocess

class ServerProcess:
    """``python -m gameserver serve --data DIR --port P --config FILE`` with bounded start and stop."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, port: int | None = None,
                 durability: str = "fsync") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.data = workdir / "data"
        self.config_path = workdir / "server.toml"
        self.log_path = workdir / "server.log"
        config = {**config, "store": {**config.get("store", {}), "durability": durability}}
        self.config_path.write_text(to_toml(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, wait: float = 30.0) -> None:
        """Start and wait until ``/health`` answers (the port may still be in TIME_WAIT: retried)."""
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gameserver", "serve", "--data", str(self.data), "--port", str(self.port),
             "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if self.health(timeout=0.5).get("status") == "ok":
                    return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start within {wait} s:\n{self.log_tail()}")

    def health(self, timeout: float = 2.0) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=timeout) as resp:
            return dict(json.loads(resp.read()))

    def metrics(self, timeout: float = 2.0) -> dict[str, float]:
        """Prometheus text as {"name{labels}": value} (comments dropped)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.ps().memory_info().rss)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash case)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, wait: float = 20.0) -> int:
        """SIGTERM (graceful) and wait; SIGKILL after ``wait``. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_errors(self) -> list[str]:
        """Log lines at level error (tracebacks of handler/tick/connection failures)."""
        return [line for line in self.log_text().splitlines() if '"level":"error"' in line]


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    """``server_process(config, durability=...)`` -> started ServerProcess; all stopped at teardown."""
    started: list[ServerProcess] = []

    def make(config: dict[str, Any], *, durability: str = "fsync", start: bool = True) -> ServerProcess:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        proc = ServerProcess(workdir, config, durability=durability)
        started.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    for proc in started:
        proc.stop(wait=10)
