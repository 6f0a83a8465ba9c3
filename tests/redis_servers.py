"""Start and stop throw-away ``redis-server`` processes on free loopback ports (tests and benchmarks).

No pytest here, so ``loadtest/bench_redis.py`` can use it too. Servers run without persistence
(``--save "" --appendonly no``), with their output in a log file in their own directory (never the caller's
pipes), and are stopped by ``stop()`` (SIGTERM, then SIGKILL). ``start_cluster`` makes a 3-master cluster
with ``redis-cli --cluster create`` and waits until every node reports ``cluster_state:ok``: it takes a few
seconds, so callers create it once and ``flush()`` between uses.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

MISSING_REASON = (
    "redis-server / redis-cli not found on PATH: the redis and redis-cluster backend tests need them "
    "(Debian: apt-get install redis-server redis-tools; .ci/run installs them)"
)


def redis_missing() -> str | None:
    """Why Redis tests cannot run here, or None when both binaries are present."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return MISSING_REASON
    return None


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A free loopback port (and port + 10000 free too when ``bus``, for the cluster bus)."""
    for _ in range(1000):
        port = random.randint(20000, 30000)
        if _free(port) and (not bus or _free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1."""

    def __init__(self, directory: Path, *, cluster: bool = False) -> None:
        self.port = free_port(bus=cluster)
        self.dir = directory / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "server.log"
        args = [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--protected-mode", "no", "--daemonize", "no"]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "5000"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {tail}")
            try:
                if self.client.ping():
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout} s")
            time.sleep(0.02)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, db: int = 0, query: str = "") -> str:
        return f"redis://{self.address}/{db}" + (f"?{query}" if query else "")

    def flush(self) -> None:
        """Drop every key (scripts stay loaded)."""
        self.client.flushall()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _cluster_state(info: Any) -> str:
    """``cluster_state`` from a CLUSTER INFO reply (redis-py gives a dict or the raw text)."""
    if isinstance(info, dict):
        return str(info.get("cluster_state", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return ""


class RedisClusterServers:
    """A cluster of ``masters`` redis-server processes (no replicas) on loopback."""

    def __init__(self, directory: Path, masters: int = 3, timeout: float = 30.0) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                self.nodes.append(RedisServer(directory, cluster=True))
            log = directory / "cluster-create.log"
            with open(log, "wb") as out:
                cmd = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                       *(n.address for n in self.nodes), "--cluster-replicas", "0", "--cluster-yes"]
                subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               timeout=timeout, check=True)
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [_cluster_state(n.client.execute_command("CLUSTER INFO")) for n in self.nodes]
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout} s: states {states}")
            time.sleep(0.05)

    @property
    def address(self) -> str:
        return self.nodes[0].address

    def url(self, query: str = "") -> str:
        return f"redis+cluster://{self.address}" + (f"?{query}" if query else "")

    def flush(self) -> None:
        for n in self.nodes:
            n.flush()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def start_server(directory: Path) -> RedisServer:
    """A single redis-server (call ``stop()`` when done)."""
    return RedisServer(directory)


def start_cluster(directory: Path, masters: int = 3) -> RedisClusterServers:
    """A ready ``masters``-node cluster (call ``stop()`` when done)."""
    return RedisClusterServers(directory, masters)


def node_clients(servers: Any) -> list[redis.Redis]:
    """A plain client per node (one for a single server)."""
    if isinstance(servers, RedisClusterServers):
        return [n.client for n in servers.nodes]
    return [servers.client]
