"""Protocol fuzzing against a server subprocess: random and mutated frames from many connections.

Frames come from ``fuzzframes.FrameFuzzer`` (seeded): byte flips, truncations and splices of the golden
fixtures, field mutations (wrong types, huge ints, unicode junk, unknown ``t``), random msgpack/JSON
structures, deep nesting, random bytes, and now and then a frame over the size limit; binary and text mixed
on one connection. Half the connections log in first so mutated room inputs reach the handlers.

Checked: the server process never dies; every reply decodes with ``decode_server(validate=True)``; no reply
carries a traceback or a source path; the server logs no error-level event (an unexpected exception in a
handler); RSS stays within a bound of its warmed-up value; ``/health`` answers at the end.
Sizes: ``RELIABILITY_FUZZ_FRAMES`` (CI 20,000, full 100,000), ``RELIABILITY_FUZZ_CONNS`` (20).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from shared.codec import decode_server
from tests.support import SECRET

from .conftest import server_config, sized
from .fuzzframes import FrameFuzzer

FRAMES = sized("RELIABILITY_FUZZ_FRAMES", 20_000, 100_000)
CONNS = sized("RELIABILITY_FUZZ_CONNS", 20, 20)
RSS_GROWTH_LIMIT = 64 * 2**20
LEAK = re.compile(r"Traceback \(most recent|File \"/|\.py\", line|site-packages|/work/")


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.replies = 0
        self.by_type: Counter[str] = Counter()
        self.by_strategy: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.invalid: list[str] = []
        self.leaks: list[str] = []
        self.reconnects = 0


async def _reader(ws: ClientConnection, tally: Tally) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            tally.replies += 1
            text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
            if LEAK.search(text):
                tally.leaks.append(text[:300])
            try:
                msg = decode_server(frame, validate=True)
            except Exception as exc:
                tally.invalid.append(f"{exc!r}: {frame[:200]!r}")
                continue
            tally.by_type[msg.t if msg.t != "error" else f"error:{msg.code}"] += 1


async def _worker(url: str, index: int, frames: int, tally: Tally, deadline: float) -> None:
    fuzzer = FrameFuzzer(1000 + index)
    sent = 0
    while sent < frames and time.monotonic() < deadline:
        try:
            ws = await connect(url, compression=None, max_size=None, open_timeout=5, close_timeout=1)
        except (OSError, InvalidHandshake, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        tally.reconnects += 1
        reader = asyncio.create_task(_reader(ws, tally))
        try:
            if index % 2 == 0:   # a logged-in fuzzer: mutated room inputs reach the room runner
                await ws.send(f'{{"t":"login","name":"fuzz_{index}","secret":"{SECRET}"}}')
            while sent < frames and time.monotonic() < deadline:
                strategy, frame = fuzzer.frame()
                tally.by_strategy[strategy] += 1
                await ws.send(frame)
                sent += 1
                tally.sent += 1
                if sent % 50 == 0:
                    await asyncio.sleep(0)   # let the reader keep up
        except ConnectionClosed:
            pass
        finally:
            tally.closes[str(ws.close_code)] += 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, 2.0)


@pytest.mark.slow
async def test_fuzzed_frames_never_crash_leak_or_break_the_protocol(server_process: Any) -> None:
    config = server_config(
        limits={"rate_per_sec": 1_000_000.0, "rate_burst": 1_000_000, "idle_timeout": 30.0},
        game={"tick_rate": 20.0, "start_room": "arena",
              "rules": {"attack_cooldown": 0.0, "respawn_seconds": 0.1}},
        rooms=[{"name": "town"}, {"name": "arena", "width": 200.0, "height": 200.0, "mob_count": 16}],
    )
    server = server_process(config, durability="flush")
    url = server.url
    tally = Tally()
    rss: list[tuple[float, int]] = []
    start = time.monotonic()
    deadline = start + 240.0
    per_conn = FRAMES // CONNS

    async def sample() -> None:
        while True:
            rss.append((time.monotonic() - start, server.rss()))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(_worker(url, i, per_conn, tally, deadline) for i in range(CONNS)))
        await asyncio.sleep(0.5)
    finally:
        sampler.cancel()
    elapsed = time.monotonic() - start
    health = server.health()
    errors = server.log_errors()
    warm = [v for t, v in rss if t >= min(2.0, elapsed / 4)] or [v for _, v in rss]
    base, peak, last = warm[0], max(warm), rss[-1][1]
    mib = 2**20
    print(f"\nfuzz: {tally.sent} frames in {elapsed:.1f} s ({tally.sent / elapsed:.0f}/s) "
          f"over {CONNS} connections "
          f"({tally.reconnects} connects), {tally.replies} replies")
    print(f"  strategies: {dict(tally.by_strategy)}")
    print(f"  replies: {dict(tally.by_type.most_common())}")
    print(f"  close codes: {dict(tally.closes)}")
    print(f"  invalid replies {len(tally.invalid)}, leaks {len(tally.leaks)}, "
          f"server error logs {len(errors)}")
    print(f"  server RSS warm {base / mib:.1f} MiB, peak {peak / mib:.1f} MiB, end {last / mib:.1f} MiB; "
          f"health {health['status']}")
    for line in (tally.invalid[:5] + tally.leaks[:5] + errors[:5]):
        print("   ", line[:400])
    assert server.alive and health["status"] == "ok"
    assert tally.sent >= FRAMES * 0.95
    assert not tally.invalid
    assert not tally.leaks
    assert not errors
    assert peak - base < RSS_GROWTH_LIMIT
