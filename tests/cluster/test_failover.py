"""Two ``gameserver serve`` processes and one Redis: SIGKILL one node, its rooms move to the survivor after
the lease expires, its players resume there (same session, ``recovered: false``: what the dead node kept
for them died with it), and no acknowledged XP (``xp`` received) is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.procs import free_port
from shared.client import GameClient, ServerError
from tests.redis_servers import RedisServer
from tests.support import FAST_RULES, SECRET, config_dict, to_toml

TTL = 2.0
pytestmark = pytest.mark.timeout(80)


def _mobs(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "kind": "slime", "x": 90.0 + 5 * i, "y": 100.0, "hp": 30, "xp": 7}
            for i in range(1, n + 1)]


def write_config(path: Path, node: str, port: int, prefix: str, redis_url: str, home: str) -> None:
    path.write_text(to_toml(config_dict(
        port=port,
        auth={"grace_seconds": 6.0},
        game={"tick_rate": 50.0, "rules": FAST_RULES},
        rooms=[{"name": "town", "width": 200.0, "height": 200.0, "mobs": _mobs(4)},
               {"name": "arena", "width": 200.0, "height": 200.0, "mobs": _mobs(4)}],
        persist={"flush_interval": 0.2},
        cluster={"node_id": node, "redis_url": redis_url, "prefix": prefix, "lease_ttl": TTL,
                 "renew_interval": 0.5, "handoff_timeout": 1.0, "rooms": [home]},
    )))


def start_node(tmp: Path, node: str, prefix: str, redis_url: str,
               home: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / f"{node}.toml"
    write_config(cfg, node, port, prefix, redis_url, home)
    log = open(tmp / f"{node}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gameserver", "serve", "--store", redis_url,
                             "--config", str(cfg)], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"node {node} did not start: {(tmp / f'{node}.log').read_text()[-3000:]}")
        time.sleep(0.05)
    return proc, f"ws://127.0.0.1:{port}/ws"


async def fight(c: GameClient, acked: dict[str, int], seconds: float) -> None:
    """Attack the room's mobs for ``seconds``; ``acked[name]`` = highest XP an ``xp`` message reported."""
    name = c.character.name if c.character else ""

    async def drain() -> None:
        async for msg in c:
            if msg.t == "xp":
                acked[name] = max(acked.get(name, 0), msg.xp)

    reader = asyncio.create_task(drain())
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for mob in (1, 2, 3, 4):
                try:
                    await c.attack(mob)
                except ServerError:
                    pass
                except Exception:   # node killed under us
                    return
    finally:
        await asyncio.sleep(0.3)   # let the last xp messages arrive
        reader.cancel()


async def test_sigkill_node_rooms_taken_over_players_resume_no_acked_xp_lost(
        redis_single: RedisServer, tmp_path: Path) -> None:
    prefix = "f" + uuid.uuid4().hex[:6]
    url = redis_single.url()
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[GameClient] = []
    r = redis.Redis(host="127.0.0.1", port=redis_single.port, decode_responses=True)
    tag = uuid.uuid4().hex[:4]
    try:
        pa, url_a = start_node(tmp_path, "A", prefix, url, "town")
        procs.append(pa)
        pb, url_b = start_node(tmp_path, "B", prefix, url, "arena")
        procs.append(pb)
        assert r.get(f"{prefix}:lease:town") == "A" and r.get(f"{prefix}:lease:arena") == "B"

        async def bot(entry: str, name: str, room: str | None) -> GameClient:
            c = await GameClient.connect(entry, timeout=8.0)
            clients.append(c)
            await c.login(f"{name}_{tag}", SECRET)
            if room is not None:
                await c.join(room)
            return c

        a_bots = [await bot(url_a, f"a{i}", None) for i in range(3)]          # town, on A
        # login on B is redirected to A (town), the join of the arena back to B
        b_bots = [await bot(url_b, f"b{i}", "arena") for i in range(3)]
        assert all(c.url == url_b for c in b_bots) and all(c.url == url_a for c in a_bots)
        sessions = {c.character.name: c.session for c in b_bots if c.character}

        acked: dict[str, int] = {}
        await asyncio.gather(*(fight(c, acked, 2.0) for c in a_bots + b_bots))
        assert any(acked.get(n, 0) > 0 for n in sessions), acked

        # SIGKILL B: no flush, no lease release, no goodbye
        os.killpg(pb.pid, signal.SIGKILL)
        pb.wait(5)
        killed_at = time.monotonic()
        while r.get(f"{prefix}:lease:arena") == "B":
            assert time.monotonic() - killed_at < TTL + 2, "lease of the dead node did not expire"
            await asyncio.sleep(0.05)

        # B's players reconnect to the survivor and resume: same session, back in the arena, now on A
        for c in b_bots:
            c.url = url_a
            welcome = await c.reconnect()
            name = welcome.character.name
            assert welcome.session == sessions[name]
            assert c.character is not None and c.character.room == "arena"
            # the dead node took the session's replay buffer with it: the gap is announced, once
            assert c.seq.unrecovered == 1 and c.seq.failures == 0, c.seq.summary()
        assert r.get(f"{prefix}:lease:arena") == "A"
        # served by the survivor now: each resumed session answers from the arena it was in
        assert [(await c.me()).character.room for c in b_bots] == ["arena"] * len(b_bots)

        # no acknowledged XP lost: every character's stored XP >= the last xp message it got
        for c in a_bots + b_bots:
            profile = await c.me()
            name = profile.character.name
            assert profile.character.xp >= acked.get(name, 0), (name, profile.character.xp, acked)
        # the arena works on A: fight a bit more
        more: dict[str, int] = {}
        await asyncio.gather(*(fight(c, more, 0.7) for c in b_bots))
        assert sum(more.values()) > 0
        top = {e.name: e.xp for e in (await a_bots[0].top(100)).entries}
        for name, xp in {**acked, **more}.items():
            assert top.get(name, 0) >= xp
    finally:
        for c in clients:
            await c.close()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        r.close()


