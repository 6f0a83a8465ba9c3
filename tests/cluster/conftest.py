"""Fixtures for the cluster tests: a fresh key prefix per test and backends of every implementation (the
Redis one on the session's ``redis_single`` server of ``tests/conftest.py``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gameserver.cluster.interfaces import Backend
from gameserver.cluster.local import LocalBackend, LocalHub

BACKENDS = ["local", "redis"]


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
        redis_server = request.getfixturevalue("redis_single")
        from gameserver.cluster.redis_backend import RedisBackend

        def make() -> Backend:
            made.append(RedisBackend(redis_server.url(), prefix))
            return made[-1]
    yield make
    for backend in made:
        await backend.close()
