"""Child processes of the benchmark and load scripts: ports, CPU pinning, readiness, stopping.

One place for what every script that starts a server subprocess needs, so a fix (say, to readiness) lands
everywhere at once. Loopback only.
"""

from __future__ import annotations

import contextlib
import os
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
