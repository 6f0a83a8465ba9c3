"""Abuse against a server subprocess while honest players play: each attack is limited, and the honest
players' p99 tick age (receive time - tick ``ts``) stays under 250 ms meanwhile.

The attacks run one after the other in a child process (``abuse_child.py``, niced so the load generator does
not starve the server on a 2-core machine): connection flood past ``limits.max_connections`` (HTTP 503),
slowloris (closed after ``limits.open_timeout``), clients that never read (disconnected when their reliable
queue overflows), oversized frames (``bye too_large`` / close 1009), chat spam (``error rate_limited`` then
``bye rate_limited``). Sizes: ``RELIABILITY_ABUSE`` multiplies the attack counts (CI 1, full 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sys
import time
from typing import Any

import pytest

from shared.client import GameClient
from tests.support import SECRET

from .conftest import REPO, percentile, server_config, sized

SCALE = sized("RELIABILITY_ABUSE", 1, 4)
HONEST = 20
MAX_CONNECTIONS = 300 * SCALE
OPEN_TIMEOUT = 2.0
P99_LIMIT = 0.250


class Honest:
    """A player who moves at 5 Hz and records the age of every tick it receives."""

    def __init__(self, client: GameClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.ages: list[tuple[float, float]] = []   # (monotonic receive time, age seconds)
        self.chats = 0

    async def read(self) -> None:
        async for msg in self.client:
            if msg.t == "tick":
                self.ages.append((time.monotonic(), time.time() - msg.ts))
            elif msg.t == "chat":
                self.chats += 1

    async def walk(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pos = self.client.world.position or (500.0, 500.0)
            angle = self.rng.uniform(0, 2 * math.pi)
            x = min(990.0, max(10.0, pos[0] + 40 * math.cos(angle)))
            y = min(990.0, max(10.0, pos[1] + 40 * math.sin(angle)))
            with contextlib.suppress(Exception):
                await self.client.move(x, y)
            await asyncio.sleep(0.2)


async def _child(mode: str, url: str, seconds: float, count: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "nice", "-n", "10", sys.executable, "-m", "tests.reliability.abuse_child", mode, "--url", url,
        "--seconds", str(seconds), "--count", str(count), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()[-2000:]
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.slow
async def test_abuse_is_limited_and_honest_tick_age_stays_low(server_process: Any) -> None:
    config = server_config(
        limits={"max_connections": MAX_CONNECTIONS, "open_timeout": OPEN_TIMEOUT, "idle_timeout": 20.0,
                "reliable_queue": 64, "write_buffer_high": 16384, "socket_send_buffer": 16384},
        rooms=[{"name": "town"}, {"name": "forest"}],
    )
    server = server_process(config, durability="flush")
    url = server.url
    stop = asyncio.Event()
    honest: list[Honest] = []
    tasks: list[asyncio.Task[Any]] = []
    phases: list[tuple[str, float, float, dict[str, Any]]] = []
    try:
        for i in range(HONEST):
            c = await GameClient.connect(url, timeout=5.0)
            await c.login(f"honest_{i}", SECRET)
            honest.append(Honest(c, i))
            tasks.append(asyncio.create_task(honest[-1].read()))   # read from the start: no inbox backlog
        tasks += [asyncio.create_task(h.walk(stop)) for h in honest]
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await asyncio.sleep(2.0)
        phases.append(("baseline", t0, time.monotonic(), {}))
        plan = [
            ("flood", 4.0, MAX_CONNECTIONS + 200 * SCALE),
            ("slowloris", OPEN_TIMEOUT + 4.0, 300 * SCALE),
            ("noread", 4.0, 5 * SCALE),
            ("oversize", 5.0, 20 * SCALE),
            ("chatspam", 5.0, 5 * SCALE),
        ]
        for mode, seconds, count in plan:
            t0 = time.monotonic()
            result = await _child(mode, url, seconds, count)
            phases.append((mode, t0, time.monotonic(), result))
            await asyncio.sleep(0.5)
        health = server.health()
        metrics = server.metrics()
        pongs = [await h.client.ping() for h in honest]
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        for h in honest:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(h.client.close(), 3.0)

    print(f"\nabuse: {HONEST} honest players, max_connections {MAX_CONNECTIONS}, "
          f"open_timeout {OPEN_TIMEOUT} s")
    p99s: dict[str, float] = {}
    for mode, start, end, result in phases:
        ages = [age for h in honest for t, age in h.ages if start <= t <= end]
        p99s[mode] = percentile(ages, 99)
        print(f"  {mode:9s} {end - start:5.1f} s  ticks {len(ages):6d}  tick age p50 "
              f"{percentile(ages, 50) * 1000:6.1f} ms p99 {p99s[mode] * 1000:6.1f} ms max "
              f"{(max(ages) if ages else 0) * 1000:6.1f} ms  {json.dumps(result)}")
    disconnects = {k: v for k, v in metrics.items() if k.startswith("gameserver_disconnects_total")}
    print(f"  server disconnects: {disconnects}")
    print(f"  after: health {health}, honest ping max {max(pongs) * 1000:.1f} ms")
    res = {mode: result for mode, _, _, result in phases}

    # every honest player kept getting ticks, with p99 age under the bound in every phase
    assert all(len(ages) > 0 for ages in ([a for t, a in h.ages] for h in honest))
    assert all(p99 < P99_LIMIT for p99 in p99s.values()), p99s
    # flood: the limit refuses upgrades with 503 and the flood is absorbed. How many connects the flooder
    # manages in its 4 s depends on the CPU it gets (770-880 with both cores busy, 1,000+ otherwise): what
    # must hold is that it went well past the limit.
    flood = res["flood"]
    assert flood.get("status_503", 0) >= 100 * SCALE, flood
    assert flood["held"] <= MAX_CONNECTIONS + 50, flood
    assert flood["connects"] >= MAX_CONNECTIONS + 200 * SCALE, flood
    # slowloris: every stalled handshake is closed by the server after about open_timeout
    slow = res["slowloris"]
    assert slow["closed_by_server"] == slow["opened"], slow
    assert OPEN_TIMEOUT - 0.5 <= slow["close_after_min"], slow
    assert slow["close_after_max"] <= OPEN_TIMEOUT + 2.0, slow
    # never-readers: disconnected once their reliable queue overflows (policy close 1008), others unaffected
    # (1006 when even the close frame could not get through the full socket before close_timeout)
    nr = res["noread"]
    assert nr["close_codes"].get("1008", 0) + nr["close_codes"].get("1006", 0) == nr["clients"], nr
    overflow = metrics.get('gameserver_disconnects_total{reason="reliable_overflow"}', 0)
    assert overflow >= res["noread"]["clients"]
    # oversize: 20 KB -> bye too_large + 1009; 2 MiB -> 1009 from the websocket layer
    over = res["oversize"]
    assert sum(v for k, v in over["close_codes"].items() if k.endswith(":1009")) == over["clients"], over
    assert over["byes"].get("too_large", 0) >= over["clients"] // 2, over
    # chat spam: rate_limited errors, then bye rate_limited within a few seconds
    spam = res["chatspam"]
    assert spam.get("error_rate_limited", 0) >= spam["clients"], spam
    assert spam.get("bye_rate_limited", 0) == spam["clients"], spam
    # afterwards: only the honest players are connected, and they are served
    assert health["status"] == "ok" and health["connections"] <= HONEST + 2, health
    assert max(pongs) < 0.5
    assert server.alive and not server.log_errors()
