"""Failed-login throttle: the pure guard with a fake clock, then end to end with real clients."""

from __future__ import annotations

import asyncio
import time

import pytest

from gameserver.loginguard import LoginGuard
from shared.client import GameClient, ServerError
from tests.support import SECRET

from .conftest import Raw, url

WRONG = "not-the-secret-at-all"


# --- the guard, time passed in ---------------------------------------------------------------------

def test_the_fifth_failure_within_the_window_locks_the_name_for_a_window() -> None:
    guard = LoginGuard(failures=5, window=60.0)
    for t in range(4):
        guard.failed("alice", float(t))
        assert guard.retry_after("alice", float(t)) is None
    guard.failed("alice", 10.0)
    assert guard.retry_after("alice", 10.0) == 60.0
    assert guard.retry_after("alice", 40.0) == 30.0
    assert guard.retry_after("bob", 40.0) is None           # per name
    assert guard.retry_after("alice", 70.0) is None          # the window passed


def test_failures_spread_over_more_than_a_window_never_lock() -> None:
    guard = LoginGuard(failures=3, window=10.0)
    for t in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0):            # never 3 within one window
        guard.failed("alice", t)
        assert guard.retry_after("alice", t) is None


def test_a_success_forgets_the_failures() -> None:
    guard = LoginGuard(failures=3, window=10.0)
    guard.failed("alice", 0.0)
    guard.failed("alice", 1.0)
    guard.succeeded("alice")
    guard.failed("alice", 2.0)
    guard.failed("alice", 3.0)
    assert guard.retry_after("alice", 3.0) is None
    guard.failed("alice", 4.0)
    assert guard.retry_after("alice", 4.0) == 10.0


def test_memory_is_bounded_and_old_names_expire() -> None:
    guard = LoginGuard(failures=2, window=10.0, max_names=100)
    for i in range(1000):
        guard.failed(f"n{i}", 0.0)
    assert len(guard) == 100                                   # the least recently failed were forgotten
    guard.failed("n999", 1.0)
    assert guard.retry_after("n999", 1.0) == 10.0 and guard.retry_after("n0", 1.0) is None
    guard.failed("late", 10.5)                                 # everything from t=0 is a window old
    assert len(guard) == 2                                     # late, and n999 (last failed at 1.0)


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"failures": 0}, {"window": 0.0}, {"max_names": 0}):
        with pytest.raises(ValueError):
            LoginGuard(**kwargs)


# --- end to end --------------------------------------------------------------------------------------

def _store_gets(server) -> float:
    sample = server.metrics.store_latency.labels("get")
    return next(s.value for m in sample.collect() for s in m.samples if s.name.endswith("_count"))


async def test_wrong_secrets_lock_the_name_without_hashing_then_the_right_one_works(start_server) -> None:
    server = await start_server(auth={"login_failures": 3, "login_window": 1.5, "grace_seconds": 0.0})
    first = await GameClient.connect(url(server))
    await first.login("lockme", SECRET)                        # creates the character
    await first.close()
    for _ in range(200):                                       # session over: logins read the store again
        if not server.registry.by_name("lockme"):
            break
        await asyncio.sleep(0.01)
    c = await GameClient.connect(url(server))
    try:
        for _ in range(3):
            with pytest.raises(ServerError) as info:
                await c.login("lockme", WRONG)
            assert info.value.code == "auth_failed" and info.value.retry_after is None
        locked_at = time.monotonic()
        gets = _store_gets(server)
        for secret in (WRONG, SECRET):                         # locked: even the right secret waits
            with pytest.raises(ServerError) as info:
                await c.login("lockme", secret)
            assert info.value.code == "rate_limited"
            assert 0.0 < info.value.retry_after <= 1.5
        assert _store_gets(server) == gets                     # refused before reading or hashing anything
        other = await GameClient.connect(url(server))          # other names are not affected
        await other.login("bystander", SECRET)
        await other.close()

        await asyncio.sleep(max(0.0, locked_at + 1.6 - time.monotonic()))
        welcome = await c.login("lockme", SECRET)
        assert welcome.character.name == "lockme"
    finally:
        await c.close()


async def test_rate_limited_login_carries_retry_after_on_the_wire(start_server, clients) -> None:
    server = await start_server(auth={"login_failures": 1, "login_window": 30.0})
    c: Raw = await clients(server, binary=False)               # JSON text frames, checked by shared models
    await c.login("wire")
    reply = await c.request({"t": "login", "name": "wire", "secret": WRONG})
    assert reply["code"] == "auth_failed" and "retry_after" not in reply
    reply = await c.request({"t": "login", "name": "wire", "secret": SECRET})
    assert reply["t"] == "error" and reply["code"] == "rate_limited"
    assert isinstance(reply["retry_after"], float) and 29.0 < reply["retry_after"] <= 30.0


async def test_a_success_resets_the_count(start_server) -> None:
    server = await start_server(auth={"login_failures": 3, "login_window": 30.0})
    creator = await GameClient.connect(url(server))
    await creator.login("resetme", SECRET)                     # the first login creates the character
    await creator.close()
    for _ in range(3):                                         # two wrong, then right: never three in a row
        c = await GameClient.connect(url(server))
        try:
            for _ in range(2):
                with pytest.raises(ServerError, match="auth_failed"):
                    await c.login("resetme", WRONG)
            assert (await c.login("resetme", SECRET)).character.name == "resetme"
        finally:
            await c.close()
