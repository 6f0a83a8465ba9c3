"""Admission of new logins: the login queue, the overload door, and refusals end to end on a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from gameserver.admission import Admission, LoginQueue, LoopLoad, Refused, loop_lag
from gameserver.auth import lower_thread_priority
from gameserver.config import build_config
from gameserver.errors import wire_error
from gameserver.metrics import Metrics
from shared.client import GameClient, ServerError

from .conftest import SECRET, Raw, url
from .test_http import _http_get


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# -- LoginQueue --------------------------------------------------------------------------------------


async def test_queue_runs_one_job_at_a_time_in_arrival_order() -> None:
    queue = LoginQueue(slots=1, max_waiting=10, max_wait=60.0)
    gates = [asyncio.Event() for _ in range(4)]
    started: list[int] = []

    async def job(i: int) -> int:
        started.append(i)
        await gates[i].wait()
        return i

    tasks = [asyncio.create_task(queue.run(lambda i=i: job(i))) for i in range(4)]
    await asyncio.sleep(0.01)
    assert started == [0] and queue.busy == 1 and queue.waiting == 3
    for i in (3, 2, 1, 0):   # releasing later jobs first changes nothing: they have not started
        gates[i].set()
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
    assert started == [0, 1, 2, 3] and queue.busy == 0 and queue.waiting == 0


async def test_queue_past_its_bound_refuses_busy_with_the_expected_drain_time() -> None:
    clock = Clock()
    queue = LoginQueue(slots=1, max_waiting=2, max_wait=60.0, clock=clock, job_seconds=1.5)
    hold = asyncio.Event()
    tasks = [asyncio.create_task(queue.run(hold.wait)) for _ in range(3)]   # 1 running + 2 waiting
    await asyncio.sleep(0.01)
    with pytest.raises(Refused) as info:
        await queue.run(hold.wait)
    assert info.value.code == "busy" and info.value.retry_after == pytest.approx(3.0)   # 2 waiting x 1.5 s
    assert wire_error(info.value, 7) == {"t": "error", "code": "busy", "message": info.value.message,
                                         "retry_after": 3.0, "rid": 7}
    hold.set()
    await asyncio.gather(*tasks)


async def test_expected_wait_grows_with_a_starved_running_job_not_only_after_it() -> None:
    clock = Clock()
    queue = LoginQueue(slots=1, max_waiting=100, max_wait=2.0, clock=clock, job_seconds=0.005)
    hold = asyncio.Event()
    running = asyncio.create_task(queue.run(hold.wait))
    waiter = asyncio.create_task(queue.run(hold.wait))
    await asyncio.sleep(0.01)
    assert queue.expected_wait() == pytest.approx(2 * 0.005)
    clock.t += 1.5                                        # the running job is stuck for 1.5 s
    assert queue.expected_wait() == pytest.approx(2 * 1.5)
    with pytest.raises(Refused):                          # over max_wait: refused at once
        await queue.run(hold.wait)
    hold.set()
    await asyncio.gather(running, waiter)


async def test_a_refusal_when_its_turn_comes_passes_the_slot_on() -> None:
    queue = LoginQueue(slots=1, max_waiting=10, max_wait=60.0)
    hold = asyncio.Event()
    first = asyncio.create_task(queue.run(hold.wait))

    def shut() -> None:
        raise Refused("server_full", "full", 5.0)

    refused = asyncio.create_task(queue.run(hold.wait, ready=shut))
    third = asyncio.create_task(queue.run(lambda: asyncio.sleep(0, "ran")))
    await asyncio.sleep(0.01)
    hold.set()
    await first
    with pytest.raises(Refused):
        await refused
    assert await third == "ran" and queue.busy == 0


async def test_a_cancelled_waiter_leaves_the_line_and_frees_nothing_it_did_not_hold() -> None:
    queue = LoginQueue(slots=1, max_waiting=10, max_wait=60.0)
    hold = asyncio.Event()
    first = asyncio.create_task(queue.run(hold.wait))
    second = asyncio.create_task(queue.run(hold.wait))
    await asyncio.sleep(0.01)
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert queue.waiting == 0 and queue.busy == 1
    hold.set()
    await first
    assert queue.busy == 0


# -- the overload door ---------------------------------------------------------------------------------


def _admission(clock: Clock, state: dict[str, float], **limits: Any) -> Admission:
    config = build_config({"limits": {"max_sessions": 3, "max_loop_busy": 0.7, "max_tick_lag": 0.02,
                                      "overload_recover": 3.0, "full_retry_after": 4.0, **limits}})
    adm = Admission(config, Metrics(), lambda: int(state["sessions"]), lambda: state["lag"], clock=clock)
    adm.load.sample = lambda: None   # type: ignore[method-assign]  # the test sets the load itself
    adm.load.busy = lambda: state["busy"]   # type: ignore[method-assign]
    return adm


def test_session_cap_refuses_server_full_with_the_configured_retry_after() -> None:
    state = {"sessions": 2, "lag": 0.0, "busy": 0.1}
    adm = _admission(Clock(), state)
    adm.check()
    state["sessions"] = 3
    with pytest.raises(Refused) as info:
        adm.check()
    assert info.value.code == "server_full" and info.value.retry_after == 4.0
    assert adm.status()["state"] == "degraded"


@pytest.mark.parametrize("signal", ["busy", "lag"])
def test_overload_shuts_the_door_until_calm_below_the_low_mark_for_the_recover_time(signal: str) -> None:
    clock = Clock()
    state = {"sessions": 0, "lag": 0.0, "busy": 0.1}
    adm = _admission(clock, state)
    adm.check()
    state.update({"busy": 0.75} if signal == "busy" else {"lag": 0.03})
    with pytest.raises(Refused):
        adm.check()
    # back under the limit but above the low mark (busy > 0.6 / lag > 10 ms): still shut, however long
    state.update({"busy": 0.65} if signal == "busy" else {"lag": 0.015})
    for _ in range(5):
        clock.t += 2.0
        with pytest.raises(Refused):
            adm.check()
    state.update({"busy": 0.5, "lag": 0.0})
    clock.t += 2.9
    with pytest.raises(Refused):        # calm, but not for 3 s yet
        adm.check()
    clock.t += 0.2
    adm.check()
    assert adm.status()["state"] == "ok"


def test_zero_limits_disable_the_load_gates() -> None:
    state = {"sessions": 0, "lag": 5.0, "busy": 1.0}
    adm = _admission(Clock(), state, max_loop_busy=0, max_tick_lag=0)
    adm.check()


def test_loop_load_is_cpu_time_over_wall_time_of_its_window() -> None:
    clock, cpu = Clock(), [0.0]
    load = LoopLoad(window=1.0, clock=clock, cpu=lambda: cpu[0])
    assert load.busy() == 0.0
    for _ in range(20):                 # 2 s at 50 % busy, then 1.5 s at 100 %
        load.sample()
        clock.t += 0.1
        cpu[0] += 0.05
    for _ in range(15):
        load.sample()
        clock.t += 0.1
        cpu[0] += 0.1
    assert load.busy() == pytest.approx(1.0)


def test_loop_lag_ignores_a_single_late_tick_and_the_room_served_last() -> None:
    assert loop_lag([]) == 0.0
    assert loop_lag([[], [0.001] * 19 + [0.5]]) == pytest.approx(0.001)
    assert loop_lag([[0.001] * 5, [0.03] * 5]) == pytest.approx(0.001)   # one room waits for another
    assert loop_lag([[0.04] * 5, [0.03] * 5]) == pytest.approx(0.03)     # every room late: the loop is


def test_hashing_threads_lower_only_their_own_priority() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are Linux only")
    seen: list[int] = []

    def worker() -> None:
        lower_thread_priority(7)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [max(7, before)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


# -- end to end ----------------------------------------------------------------------------------------


async def test_full_server_refuses_login_with_server_full_metric_and_degraded_health(
        start_server: Callable[..., Any], clients: Callable[..., Any]) -> None:
    server = await start_server(limits={"max_sessions": 1, "full_retry_after": 2.5, "idle_timeout": 5.0,
                                        "close_timeout": 1.0})
    first: Raw = await clients(server)
    await first.login("first")
    second: Raw = await clients(server)
    reply = await second.request({"t": "login", "name": "second", "secret": SECRET})
    assert reply["t"] == "error" and reply["code"] == "server_full" and reply["retry_after"] == 2.5
    status, body = await _http_get(server.port, "/health")
    health = json.loads(body)
    assert status == 503 and health["status"] == "degraded" and "full" in health["admission"]["reason"]
    _, metrics = await _http_get(server.port, "/metrics")
    assert 'gameserver_logins_refused_total{reason="server_full"} 1.0' in metrics.decode()
    pong = await second.request({"t": "ping"})      # the refused socket stays usable
    assert pong["t"] == "pong"


async def test_burst_of_logins_past_the_queue_gets_busy_and_the_rest_get_in(
        start_server: Callable[..., Any], clients: Callable[..., Any]) -> None:
    # a slow hash (~20-50 ms) and room for one waiting login: of 6 simultaneous logins some must be busy
    server = await start_server(auth={"token_secret": "test-token-secret-0123456789", "grace_seconds": 1.0,
                                      "scrypt_n": 2**14}, limits={"login_queue": 1})
    raws: list[Raw] = [await clients(server) for _ in range(6)]
    for i, raw in enumerate(raws):
        await raw.send({"t": "login", "name": f"burst{i}", "secret": SECRET, "rid": 1})
    replies = [await _first_reply(raw) for raw in raws]
    codes = [r.get("code", r["t"]) for r in replies]
    assert codes.count("welcome") >= 2 and codes.count("busy") >= 1, codes
    assert set(codes) <= {"welcome", "busy"}
    assert all(r["retry_after"] >= 1.0 for r in replies if r["t"] == "error")


async def _first_reply(raw: Raw) -> dict[str, Any]:
    while True:
        msg = await raw.recv(wait=20)
        if msg.get("rid") == 1:
            return msg


async def test_game_client_waits_out_server_full_then_gets_in(
        start_server: Callable[..., Any]) -> None:
    server = await start_server(limits={"max_sessions": 1, "full_retry_after": 1.0, "idle_timeout": 5.0,
                                        "close_timeout": 1.0})
    holder = await GameClient.connect(url(server))
    await holder.login("holder", SECRET)
    impatient = await GameClient.connect(url(server), retry_refused=0)
    with pytest.raises(ServerError) as info:
        await impatient.login("impatient", SECRET)
    assert info.value.code == "server_full" and info.value.retry_after == 1.0
    patient = await GameClient.connect(url(server), retry_refused=15)
    waiting = asyncio.create_task(patient.login("patient", SECRET))
    await asyncio.sleep(1.5)
    assert not waiting.done() and patient.refusals >= 1
    await holder.close()                  # its session ends after the 1 s grace: a place frees up
    welcome = await asyncio.wait_for(waiting, 15)
    assert welcome.character.name == "patient"
    for c in (impatient, patient):
        await c.close()
