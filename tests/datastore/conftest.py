"""Fixtures for the datastore tests: every API test runs on every backend.

``store`` yields an open store for each name in ``BACKENDS``: memory, file, and Redis (the session's one
server and 3-master cluster of ``tests/conftest.py``, flushed before each test). After the test the store's
invariants are checked (``verify``) when the backend has a checker, then it is closed. ``store_url`` /
``open_file_store`` serve reopen tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from datastore import fileio, open_store

BACKENDS = ["memory", "file", "redis", "redis-cluster"]
REDIS_URLS: dict[str, str] = {}  # filled by redis_servers_of() from the session's servers (tests/conftest.py)
URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp: "memory://?sweep_interval=0.05",
    "file": lambda tmp: f"file://{tmp}/db?durability=fsync&sweep_interval=0.05",
    "redis": lambda tmp: REDIS_URLS["redis"],
    "redis-cluster": lambda tmp: REDIS_URLS["redis-cluster"],
}
REDIS_FIXTURES = {"redis": "redis_single", "redis-cluster": "redis_cluster"}


def redis_servers_of(request: pytest.FixtureRequest, kind: str) -> Any:
    """The session's server(s) of backend ``kind`` ("redis" or "redis-cluster"), emptied for this test."""
    servers = request.getfixturevalue(REDIS_FIXTURES[kind])
    servers.flush()
    REDIS_URLS[kind] = servers.url(query="socket_timeout=10")
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
    if request.param in REDIS_FIXTURES:  # started once per run, emptied for this test
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
