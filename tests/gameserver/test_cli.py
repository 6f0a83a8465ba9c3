"""``gameserver`` as an operator meets it, in real subprocesses: start-up failures are one line and an exit
code (no traceback), a SIGTERM right after the port opens is a clean stop, ``demo`` comes from an entry
point and speaks sentences."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datastore import open_store
from loadtest.procs import free_port

ENV = {**os.environ, "GAMESERVER_TOKEN_SECRET": "cli-test-secret-0123456789", "PYTHONUNBUFFERED": "1"}


def serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``gameserver serve ARGS`` to its end (each case here fails at start-up)."""
    return subprocess.run([sys.executable, "-m", "gameserver", "serve", "--host", "127.0.0.1", *args],
                          capture_output=True, text=True, timeout=timeout, env=ENV, stdin=subprocess.DEVNULL)


def only_line(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = serve("--port", str(port), "--data", str(tmp_path / "data"))
    assert out.returncode == 1
    assert only_line(out) == f"gameserver: port {port} on 127.0.0.1 is already in use"


def test_data_directory_that_cannot_be_created_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    out = serve("--port", "0", "--data", str(tmp_path / "a-file" / "data"))
    assert out.returncode == 1
    where = tmp_path / "a-file" / "data"
    assert only_line(out) == f"gameserver: cannot create or open data directory {where}: Not a directory"


async def test_data_directory_locked_by_another_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = await open_store(f"file://{data}?durability=flush")   # holds the directory's LOCK
    try:
        out = serve("--port", "0", "--data", str(data))
    finally:
        await holder.close()
    assert out.returncode == 1
    assert only_line(out) == f"gameserver: data directory {data} is locked by another server"


@pytest.mark.parametrize(("url", "names"), [
    ("nope://x", "'nope'"),
    ("file:///tmp/x?durability=sometimes", "'durability'"),
    ("file:///tmp/x?segment_bytes=-5", "'segment_bytes'"),
    ("file:///tmp/x?colour=blue", "'colour'"),
    ("memory://host/path", "memory://"),
    ("redis://127.0.0.1:1/x", "redis"),
])
def test_bad_store_url_is_one_line_naming_the_problem_and_exit_2(url: str, names: str) -> None:
    out = serve("--port", "0", "--store", url)
    assert out.returncode == 2, out.stderr
    line = only_line(out)
    assert line.startswith("gameserver: invalid store URL: ") and names in line, line


def test_sigterm_just_after_the_port_opens_is_a_clean_stop(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gameserver", "serve", "--port", str(port),
                             "--data", str(tmp_path / "data")], env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:   # poll fast: the signal must land in the first moments the port is open
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert '"event":"stopped"' in err and "Traceback" not in err


def test_demo_is_found_through_the_entry_point_and_its_first_line_is_a_sentence(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "GAMESERVER_TOKEN_SECRET"}   # the demo's usual warning
    out = subprocess.run([sys.executable, "-m", "gameserver", "demo", "--port", "0", "--bots", "2",
                          "--duration", "1", "--quiet", "--data", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    first = out.stderr.splitlines()[0]
    assert "warning gameserver.app: auth.token_secret is not set, so resume tokens will not survive" in first
    assert first.endswith("event=ephemeral_token_secret")
    assert "game server on 127.0.0.1:" in out.stdout and "unexpected errors: 0" in out.stdout
