"""Child processes of the benchmark and load scripts: ports, CPU pinning, readiness, stopping.

One place for what every script that starts a server subprocess needs, so a fix (say, to readiness) lands
everywhere at once. Loopback only.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux default 32768-60999)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    return 32768, 60999


def server_port(low: int = 20000, high: int = 32000, attempts: int = 200) -> int:
    """A free listening port OUTSIDE the ephemeral range, for servers that thousands of local clients hit.

    A listener inside the ephemeral range competes with the clients' own source ports; picking below it
    keeps a big local load test from failing for that reason. Bounded random probing on 127.0.0.1.
    """
    e_low, e_high = ephemeral_range()
    candidates = [p for p in range(low, high) if not e_low <= p <= e_high]
    rng = random.Random()
    for _ in range(attempts):
        port = rng.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high} outside the ephemeral range")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file soft limit toward ``wanted`` (capped by the hard limit); children
    inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def pinned(core: str | None, argv: list[str]) -> list[str]:
    """Prefix argv with ``taskset -c core`` when taskset exists, a core is given and there are several."""
    if core and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", core, *argv]
    return argv


def wait_healthy(port: int, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    """Wait until the server's ``/health`` answers 200 (it answers 503 while starting); bounded."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"server did not become healthy within {seconds:g} s")


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (the server's graceful stop), then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
