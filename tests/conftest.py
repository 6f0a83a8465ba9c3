"""Fixtures every suite shares: the Redis servers of the test run (started once, on free loopback ports).

``redis_single`` (one server) and ``redis_cluster`` (3 masters, no replicas) are session-scoped: the first
test that needs one starts it, the datastore and cluster suites share it, and it stops at the end of the
run. Users empty them as they need (``flush()``, or a fresh key prefix). Without any Redis-compatible
binary (see ``tests/redis_servers.py``) the tests that need one skip with the helper's one reason. The
report header says which server the Redis tests run on and which Chromium the browser tests drive.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import redis_servers
from tests.support import CHROMIUM_MISSING, find_chromium


def pytest_report_header() -> list[str]:
    found = redis_servers.find_binaries()
    return [f"redis tests run on: {found.describe() if found else redis_servers.MISSING_REASON}",
            f"browser tests run on: {chromium}" if (chromium := find_chromium()) else
            f"browser tests: {CHROMIUM_MISSING}"]


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_servers.RedisServer]:
    """One Redis-compatible server for the whole run."""
    reason = redis_servers.redis_missing()
    if reason:
        pytest.skip(reason)
    server = redis_servers.start_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_servers.RedisClusterServers]:
    """One 3-master cluster for the whole run (~2 s to build)."""
    reason = redis_servers.redis_missing()
    if reason:
        pytest.skip(reason)
    cluster = redis_servers.start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()
