"""Fixtures for the datastore tests: every API test runs on every backend.

``store`` yields an open store for each name in ``BACKENDS``: memory, file, and Redis (the session's one
server and 3-master cluster of ``tests/conftest.py``, and a 3-master cluster with one replica each used
with ``replicas=1``, all flushed before each test). After the test the store's invariants are checked
(``verify``) when the backend has a checker, then it is closed. ``store_url`` / ``open_file_store`` serve
reopen tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datastore import fileio, open_store
from tests import redis_servers

BACKENDS = ["memory", "file", "redis", "redis-cluster", "redis-cluster-replicas"]
REDIS_URLS: dict[str, str] = {}  # filled by redis_servers_of() from the session's servers
URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp: "memory://?sweep_interval=0.05",
    "file": lambda tmp: f"file://{tmp}/db?durability=fsync&sweep_interval=0.05",
    "redis": lambda tmp: REDIS_URLS["redis"],
    "redis-cluster": lambda tmp: REDIS_URLS["redis-cluster"],
    "redis-cluster-replicas": lambda tmp: REDIS_URLS["redis-cluster-replicas"],
}
REDIS_FIXTURES = {"redis": "redis_single", "redis-cluster": "redis_cluster"}  # what test_redis_specific uses
ALL_REDIS_FIXTURES = {**REDIS_FIXTURES, "redis-cluster-replicas": "redis_cluster_replicated"}
REDIS_QUERIES = {
    "redis": "socket_timeout=10",
    "redis-cluster": "socket_timeout=10",
    "redis-cluster-replicas": "socket_timeout=10&replicas=1&replica_timeout=5",
}
REPLICATED_NODE_TIMEOUT_MS = 1000


@pytest.fixture(scope="session")
def redis_cluster_replicated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[redis_servers.RedisClusterServers]:
    """3 masters with one replica each, for the whole run: the conformance suite with ``replicas=1``.

    Nothing kills or pauses its nodes (the failover tests build their own cluster).
    """
    reason = redis_servers.redis_missing()
    if reason:
        pytest.skip(reason)
    cluster = redis_servers.start_cluster(tmp_path_factory.mktemp("redis-replicated"), masters=3, replicas=1,
                                          node_timeout_ms=REPLICATED_NODE_TIMEOUT_MS)
    yield cluster
    cluster.stop()


def redis_servers_of(request: pytest.FixtureRequest, kind: str) -> Any:
    """The session's server(s) of Redis backend ``kind``, emptied for this test."""
    servers = request.getfixturevalue(ALL_REDIS_FIXTURES[kind])
    servers.flush()
    REDIS_URLS[kind] = servers.url(query=REDIS_QUERIES[kind])
    return servers


async def check_and_close(store: Any) -> None:
    """Assert the store's invariants (if it can check them), then close it."""
    if getattr(store, "closed", False):
        return
    if hasattr(store, "verify"):
        report = await store.verify()
        assert report["ok"], report["problems"]
    await store.close()


@pytest.fixture(autouse=True)
def _no_leftover_faults() -> Any:
    yield
    fileio.clear_faults()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param in ALL_REDIS_FIXTURES:  # started once per run, emptied for this test
        redis_servers_of(request, request.param)
    return request.param


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Any]:
    s = await open_store(URLS[backend](tmp_path))
    try:
        yield s
    finally:
        await check_and_close(s)


@pytest.fixture
def store_url(tmp_path: Path) -> Callable[..., str]:
    """File-store URL in this test's directory: ``store_url("flush", segment_bytes=65536)``."""

    def make(durability: str = "fsync", **options: Any) -> str:
        query = "&".join([f"durability={durability}", *(f"{k}={v}" for k, v in options.items())])
        return f"file://{tmp_path}/db?{query}"

    return make


@pytest.fixture
async def open_file_store(store_url: Callable[..., str]) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Open (and reopen) file stores; any still open at the end are verified and closed."""
    opened: list[Any] = []

    async def opener(durability: str = "fsync", **options: Any) -> Any:
        s = await open_store(store_url(durability, **options))
        opened.append(s)
        return s

    yield opener
    for s in opened:
        with contextlib.suppress(Exception):
            await s.close()
