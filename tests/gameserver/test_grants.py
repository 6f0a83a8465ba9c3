"""XP grants (``gameserver/grants.py``): the retry policy on its own (which errors end a grant at once,
backoff capped and jittered, the deadline), then grants on a real file store with injected disk faults
(``datastore.fileio``): retried until the fault clears, given up at the deadline, ended at once by a
record too big, ``/health`` degraded meanwhile, and what a clean shutdown does with grants still waiting.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import random
import time
from pathlib import Path

import pytest

from datastore import (
    CorruptLogError,
    GenerationError,
    InvalidBinError,
    InvalidKeyError,
    RecordTooBigError,
    ReplicationTimeoutError,
    StorageError,
    StoreClosedError,
    fileio,
    open_store,
)
from gameserver.characters import UnknownCharacter
from gameserver.config import ConfigError, build_config
from gameserver.grants import RetryPolicy, ends_at_once
from gameserver.storehealth import unavailable

from .conftest import Raw
from .test_http import _http_get


@pytest.fixture(autouse=True)
def _no_faults_left():
    yield
    fileio.clear_faults()


# ------------------------------------------------------------------------------------- the policy

@pytest.mark.parametrize("exc", [
    RecordTooBigError("too big"), InvalidBinError("bad bin"), InvalidKeyError("bad key"),
    UnknownCharacter("nobody"), StoreClosedError("closed"), CorruptLogError("bad frame"),
], ids=type)
def test_errors_that_mean_never_end_a_grant_at_once(exc: Exception) -> None:
    assert ends_at_once(exc)
    assert not unavailable(exc), "a bad request does not make the store degraded"


@pytest.mark.parametrize("exc", [
    StorageError("disk full"), StorageError("connection reset after the write", in_doubt=True),
    ReplicationTimeoutError("0 of 1 replicas", confirmed=0, required=1),
    OSError(errno.ECONNREFUSED, "refused"), TimeoutError("socket timeout"),
], ids=lambda e: f"{type(e).__name__}-in_doubt={getattr(e, 'in_doubt', False)}")
def test_storage_errors_and_in_doubt_ones_are_retried_and_count_as_unavailable(exc: Exception) -> None:
    assert not ends_at_once(exc)
    assert unavailable(exc)


@pytest.mark.parametrize("exc", [GenerationError("still conflicting"), RuntimeError("a bug")], ids=type)
def test_other_errors_are_retried_but_do_not_make_the_store_degraded(exc: Exception) -> None:
    assert not ends_at_once(exc)
    assert not unavailable(exc)


def test_backoff_doubles_from_the_first_delay_up_to_the_cap_with_half_to_full_jitter() -> None:
    policy = RetryPolicy(first=0.05, cap=1.0, window=30.0)
    rng = random.Random(1)
    for retry in range(80):   # far past the cap, and past float overflow of 2**retry
        top = min(1.0, 0.05 * 2 ** min(retry, 64))
        draws = [policy.backoff(retry, rng) for _ in range(50)]
        assert all(top / 2 <= d <= top for d in draws), (retry, top, draws)
    capped = [policy.backoff(30, rng) for _ in range(400)]
    assert len(set(capped)) > 390, "jittered: grants failed together do not retry in lockstep"
    assert min(capped) < 0.55 and max(capped) > 0.95, "the draws cover half of the cap to all of it"
    assert max(policy.backoff(0, rng) for _ in range(100)) <= 0.05


def test_retries_stop_at_the_deadline_and_the_last_try_is_at_the_deadline() -> None:
    policy = RetryPolicy(first=0.05, cap=1.0, window=30.0)
    rng = random.Random(2)
    elapsed, retry = 0.0, 0
    while (delay := policy.next_delay(retry, elapsed, rng)) is not None:
        assert 0 < delay <= 1.0
        elapsed += delay
        retry += 1
        assert retry < 1000
    assert elapsed == pytest.approx(30.0), "the last wait is cut to end exactly at the deadline"
    # capped waits are 0.5..1 s: 30 s hold 30..60 tries after the first ~5 growing ones
    assert 30 <= retry <= 66, retry
    assert policy.next_delay(0, 29.99, rng) == pytest.approx(0.01)
    assert RetryPolicy(0.05, 1.0, 0.0).next_delay(0, 0.0, rng) is None, "window 0: one try, no retry"


def test_config_rejects_the_removed_retry_count_and_backoff_above_its_cap() -> None:
    with pytest.raises(ConfigError, match="grant_retry_for"):
        build_config({"persist": {"grant_retries": 5}})
    with pytest.raises(ConfigError, match="grant_backoff_max"):
        build_config({"persist": {"grant_backoff": 2.0, "grant_backoff_max": 1.0}})
    assert build_config({}).persist.grant_retry_for == 30.0


# ---------------------------------------------------------------------------- on a real file store

async def _record(server, name: str) -> dict:
    rec = await server.store.get(server.characters.key(name))
    assert rec is not None
    return rec.bins


async def test_grant_during_a_disk_fault_is_stored_once_and_acknowledged_after_it_clears(
        start_server, clients) -> None:
    server = await start_server(persist={"grant_backoff": 0.02, "grant_backoff_max": 0.2})
    c: Raw = await clients(server)
    await c.login("patient")
    fileio.set_fault("write", errno.ENOSPC)
    task = asyncio.create_task(server.grant_xp("patient", 10, "g-patient-1"))
    await asyncio.sleep(0.6)
    assert not task.done(), "still retrying while the disk fails"
    assert server.grants.pending["g-patient-1"].tries >= 3
    status, body = await _http_get(server.port, "/health")
    health = json.loads(body)
    assert status == 503 and health["status"] == "degraded", health
    assert health["store"]["grants_waiting"] == 1 and "No space" in health["store"]["error"], health
    metrics = (await _http_get(server.port, "/metrics"))[1].decode()
    assert "gameserver_xp_grants_pending 1.0" in metrics and "gameserver_store_degraded 1.0" in metrics
    fileio.clear_faults()
    result = await asyncio.wait_for(task, 2.0)
    assert result is not None and result.xp == 10 and result.applied
    xp = await c.expect("xp")
    assert xp["xp"] == 10 and xp["gained"] == 10
    bins = await _record(server, "patient")
    assert bins["xp"] == 10 and bins["grants"] == ["g-patient-1"]
    for _ in range(40):   # the write-behind flush that failed meanwhile succeeds at its next period
        status, body = await _http_get(server.port, "/health")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200 and json.loads(body)["store"] == {"state": "ok"}, body
    assert server.metrics.grant_failures.labels("gave_up")._value.get() == 0


async def test_grant_gives_up_with_error_internal_when_the_fault_outlasts_grant_retry_for(
        start_server, clients) -> None:
    server = await start_server(persist={"grant_retry_for": 0.5, "grant_backoff": 0.02,
                                         "grant_backoff_max": 0.1})
    c: Raw = await clients(server)
    await c.login("unlucky")
    fileio.set_fault("write", errno.EIO)
    t0 = time.monotonic()
    result = await server.grant_xp("unlucky", 10, "g-unlucky-1")
    waited = time.monotonic() - t0
    fileio.clear_faults()
    assert result is None
    assert 0.5 <= waited < 2.0, waited
    err = await c.expect("error")
    assert err["code"] == "internal"
    assert (await _record(server, "unlucky"))["xp"] == 0
    assert server.metrics.grant_failures.labels("gave_up")._value.get() == 1
    # a grant that gave up no longer waits (the character's failed flush may, until its next period)
    assert server.characters.health.report().get("grants_waiting", 0) == 0


async def test_record_too_big_ends_the_grant_at_once_while_other_characters_still_get_xp(
        start_server, clients, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'small'}?durability=flush&max_record_bytes=900"
    server = await start_server(store={"url": url}, persist={"recent_grants": 1000})
    big: Raw = await clients(server)
    await big.login("hoarder")
    result, n = None, 0
    for n in range(1, 60):   # each grant id adds ~34 bytes to the record
        t0 = time.monotonic()
        result = await server.grant_xp("hoarder", 10, f"hoarder-grant-{n:04d}")
        if result is None:
            break
    assert result is None, "the record reached max_record_bytes"
    assert time.monotonic() - t0 < 2.0, "a final error is not retried for grant_retry_for (30 s)"
    assert server.metrics.grant_failures.labels("final")._value.get() == 1
    for _ in range(n - 1):
        await big.expect("xp")
    assert (await big.expect("error"))["code"] == "internal"
    assert (await _record(server, "hoarder"))["xp"] == 10 * (n - 1)
    assert not server.characters.health.degraded
    unknown = await server.grant_xp("nobody_here", 10, "g-nobody")
    assert unknown is None and server.metrics.grant_failures.labels("final")._value.get() == 2


async def test_shutdown_retries_waiting_grants_until_the_store_answers_within_the_grace(
        start_server, clients, make_config) -> None:
    config = make_config(persist={"grant_backoff": 0.02, "grant_backoff_max": 0.1})
    server = await start_server(config)
    c: Raw = await clients(server)
    await c.login("late")
    fileio.set_fault("write", errno.ENOSPC)
    server.grants.start("late", 10, "kill:1")
    await asyncio.sleep(0.3)
    assert len(server.grants.pending) == 1
    asyncio.get_running_loop().call_later(0.7, fileio.clear_faults)
    t0 = time.monotonic()
    await server.stop(grace=5.0)
    assert time.monotonic() - t0 < 4.0, "stop waits for the grant, not for the whole grace"
    store = await open_store(config.store.resolved_url())
    try:
        rec = await store.get(server.characters.key("late"))
        assert rec is not None and rec.bins["xp"] == 10 and len(rec.bins["grants"]) == 1
    finally:
        await store.close()


async def test_shutdown_logs_grants_not_stored_when_the_grace_ends(start_server, clients, make_config,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(persist={"grant_backoff": 0.02, "grant_backoff_max": 0.1})
    server = await start_server(config)
    c: Raw = await clients(server)
    await c.login("doomed")
    fileio.set_fault("write", errno.EIO)
    server.grants.start("doomed", 10, "kill:1")
    server.grants.start("doomed", 20, "kill:2")
    await asyncio.sleep(0.3)
    ids = set(server.grants.pending)
    assert len(ids) == 2
    caplog.set_level(logging.ERROR, logger="gameserver.grants")
    t0 = time.monotonic()
    await server.stop(grace=1.5)
    assert 1.0 <= time.monotonic() - t0 < 4.0
    fileio.clear_faults()
    lines = [r.getMessage() for r in caplog.records if "shutdown grace" in r.getMessage()]
    assert len(lines) == 2, lines
    for gid in ids:
        assert any(f"grant={gid}" in line and "name=doomed" in line for line in lines), (gid, lines)
    assert server.metrics.grant_failures.labels("shutdown")._value.get() == 2
    assert not server.grants.pending and not server.grants.tasks
    store = await open_store(config.store.resolved_url())
    try:
        rec = await store.get(server.characters.key("doomed"))
        assert rec is not None and rec.bins["xp"] == 0
    finally:
        await store.close()


async def test_grants_beyond_grant_pending_max_fail_at_once(start_server, clients) -> None:
    server = await start_server(persist={"grant_pending_max": 3, "grant_backoff": 0.02,
                                         "grant_backoff_max": 0.1})
    c: Raw = await clients(server)
    await c.login("crowd")
    fileio.set_fault("write", errno.ENOSPC)
    for i in range(5):
        server.grants.start("crowd", 10, f"kill:{i}")
    await asyncio.sleep(0.1)
    assert len(server.grants.pending) == 3
    assert server.metrics.grant_failures.labels("overflow")._value.get() == 2
    assert (await c.expect("error"))["code"] == "internal"
    fileio.clear_faults()
    for _ in range(3):
        await c.expect("xp")
    assert (await _record(server, "crowd"))["xp"] == 30


async def test_failing_write_behind_alone_makes_the_store_degraded_until_its_next_flush_succeeds(
        start_server, clients) -> None:
    server = await start_server()   # flush_interval 0.2 s
    c: Raw = await clients(server)
    await c.login("walker")
    health = server.characters.health
    fileio.set_fault("write", errno.EIO)
    server.characters.mark_dirty(server.characters.live["walker"])
    await asyncio.sleep(0.5)
    report = health.report()
    assert report["state"] == "degraded" and report["flushes_failing"] == 1, report
    assert report["grants_waiting"] == 0 and report["for_seconds"] > 0.1, report
    fileio.clear_faults()
    await asyncio.sleep(0.5)
    assert health.report() == {"state": "ok"}
    fileio.set_fault("write", errno.EIO)
    server.characters.mark_dirty(server.characters.live["walker"])
    await asyncio.sleep(0.5)
    assert health.degraded
    server.characters.release("walker")   # its session ended: nothing of it waits any more
    assert not health.degraded
