"""Fixtures for the cluster tests: one throw-away redis-server per test session (skipped loudly when
redis-server is missing), a fresh key prefix per test, and backends of every implementation."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gameserver.cluster.interfaces import Backend
from gameserver.cluster.local import LocalBackend, LocalHub
from tests.redis_servers import RedisServer, redis_missing, start_server

BACKENDS = ["local", "redis"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    reason = redis_missing()
    if reason is not None:
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    server = start_server(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture(params=BACKENDS)
async def make_backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Callable[[], Backend]]:
    """``make_backend()`` -> a backend; several calls share one hub / Redis (several nodes)."""
    made: list[Any] = []
    if request.param == "local":
        hub = LocalHub()

        def make() -> Backend:
            made.append(LocalBackend(hub))
            return made[-1]
    else:
        redis_server = request.getfixturevalue("redis_server")
        from gameserver.cluster.redis_backend import RedisBackend

        def make() -> Backend:
            made.append(RedisBackend(redis_server.url(), prefix))
            return made[-1]
    yield make
    for backend in made:
        await backend.close()
