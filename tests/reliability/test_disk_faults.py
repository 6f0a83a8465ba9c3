"""Disk faults through the server: ENOSPC / EIO injected on write and on fsync (``datastore.fileio``) while
players kill mobs and log in.

While the fault lasts, the affected actions fail cleanly: a kill's XP grant is retried and then answered
``error internal``, a first login (which creates the record) is answered ``error internal``. The server keeps
serving (pings answered, ticks flowing). When the fault clears, new grants and logins succeed again, and
after a restart on the same directory nothing acknowledged is missing and no grant was applied twice.
The server runs in this process (faults are process-global), with a real file store in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest

from datastore import Key, fileio, open_store
from gameserver.app import GameServer
from shared.client import GameClient, ServerError
from tests.support import SECRET, server_config

from .conftest import percentile

XP = 10
FAULT_SECONDS = 2.5


def fault_config(tmp_path: Path) -> Any:
    return server_config(
        tmp_path / "data",
        game={"tick_rate": 20.0, "start_room": "arena",
              "rules": {"attack_cooldown": 0.0, "respawn_seconds": 0.1, "dmg_min": 10, "dmg_max": 10}},
        rooms=[{"name": "town"},
               {"name": "arena", "width": 200.0, "height": 200.0, "mob_count": 36, "mob_hp": 20,
                "mob_xp": XP}],
        store={"durability": "fsync"},
        persist={"grant_retries": 2, "grant_backoff": 0.05, "recent_grants": 3000, "flush_interval": 0.5},
    )


class Hunter:
    """Attacks mobs in range; logs ``xp`` and ``error internal`` with the time they arrived."""

    def __init__(self, client: GameClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.acked: list[tuple[float, int]] = []      # (arrival, resulting xp)
        self.internal: list[float] = []

    async def read(self) -> None:
        async for msg in self.client:
            if msg.t == "xp":
                self.acked.append((time.monotonic(), msg.xp))
            elif msg.t == "error" and msg.code == "internal":
                self.internal.append(time.monotonic())

    async def hunt(self, stop: asyncio.Event) -> None:
        world = self.client.world
        while not stop.is_set() and not self.client.closed:
            pos = world.position or (100.0, 100.0)
            near = [mid for mid, (_, x, y, hp) in world.mobs.items()
                    if hp > 0 and math.hypot(x - pos[0], y - pos[1]) < 60.0]
            if near:
                with contextlib.suppress(ServerError):
                    await self.client.attack(self.rng.choice(near))
            await asyncio.sleep(0.03)


@pytest.mark.parametrize(("kind", "code"), [
    ("write", errno.ENOSPC), ("write", errno.EIO), ("fsync", errno.EIO), ("fsync", errno.ENOSPC),
])
async def test_disk_fault_fails_actions_with_internal_keeps_serving_and_recovers(
        tmp_path: Path, kind: str, code: int) -> None:
    config = fault_config(tmp_path)
    server = GameServer(config)
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws"
    clients: list[GameClient] = []
    tasks: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()
    try:
        hunters: list[Hunter] = []
        for i in range(4):
            c = await GameClient.connect(url, timeout=5.0)
            clients.append(c)
            await c.login(f"miner_{i}", SECRET)
            hunters.append(Hunter(c, i))
        pinger = await GameClient.connect(url, timeout=5.0)
        clients.append(pinger)
        await pinger.login("pinger", SECRET)
        tasks += [asyncio.create_task(h.read()) for h in hunters]
        tasks += [asyncio.create_task(h.hunt(stop)) for h in hunters]
        await asyncio.sleep(1.0)
        before_fault = sum(len(h.acked) for h in hunters)

        # -- fault on: grants fail after their retries, first logins fail, pings and ticks go on
        runner = server.runners["arena"]
        ticks0 = runner.n
        fault_start = time.monotonic()
        fileio.set_fault(kind, code)
        rtts: list[float] = []
        login_error = ""
        try:
            newbie = await GameClient.connect(url, timeout=5.0)
            clients.append(newbie)
            try:
                await newbie.login("newbie_fault", SECRET)
            except ServerError as exc:
                login_error = exc.code
            while time.monotonic() - fault_start < FAULT_SECONDS:
                rtts.append(await pinger.ping())
                await asyncio.sleep(0.05)
        finally:
            fileio.clear_faults()
        fault_end = time.monotonic()
        ticks_during = runner.n - ticks0

        # -- fault off: everything works again
        await asyncio.sleep(1.5)
        late = await GameClient.connect(url, timeout=5.0)
        clients.append(late)
        welcome = await late.login("newbie_after", SECRET)
        stop.set()
        await asyncio.sleep(0.5)   # grants in flight get acknowledged
        internal_in_fault = sum(1 for h in hunters for t in h.internal if fault_start <= t <= fault_end + 1.0)
        acked_in_fault = sum(1 for h in hunters for t, _ in h.acked
                             if fault_start + 0.3 <= t <= fault_end)
        acked_after = sum(1 for h in hunters for t, _ in h.acked if t > fault_end + 0.3)
        max_acked = {f"miner_{i}": max((x for _, x in h.acked), default=0) for i, h in enumerate(hunters)}
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        for c in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 3.0)
        await server.stop()
        fileio.clear_faults()

    # -- restart on the same directory: acknowledged xp present, each grant once
    store = await open_store(config.store.resolved_url())
    stored: dict[str, tuple[int, list[str]]] = {}
    try:
        for name in max_acked:
            rec = await store.get(Key("game", "characters", name))
            assert rec is not None
            stored[name] = (int(rec.bins["xp"]), list(rec.bins["grants"]))
        assert await store.get(Key("game", "characters", "newbie_fault")) is None
    finally:
        await store.close()

    print(f"\ndisk fault {kind} {errno.errorcode[code]} for {FAULT_SECONDS} s: "
          f"grants acked before {before_fault}, "
          f"error internal during fault {internal_in_fault}, acked during fault {acked_in_fault}, "
          f"acked after clear {acked_after}; first login during fault -> {login_error or 'ok'}; "
          f"pings {len(rtts)} p50 {percentile(rtts, 50) * 1000:.1f} ms max {max(rtts) * 1000:.1f} ms; "
          f"ticks during fault {ticks_during} (expected ~{int(FAULT_SECONDS * 20)}); "
          f"stored xp {[v[0] for v in stored.values()]} vs max acked {list(max_acked.values())}")
    assert login_error == "internal"
    assert internal_in_fault > 0, "grants during the fault are answered error internal"
    assert acked_in_fault == 0, "nothing is acknowledged while the disk fails"
    assert acked_after > 0, "grants succeed again once the fault clears"
    assert welcome.character.name == "newbie_after"
    assert max(rtts) < 1.0 and len(rtts) >= FAULT_SECONDS / 0.1
    assert ticks_during >= FAULT_SECONDS * 20 * 0.8
    for name, (xp, grants) in stored.items():
        assert xp >= max_acked[name], f"{name}: acknowledged xp lost"
        assert len(set(grants)) == len(grants) and xp == XP * len(grants), f"{name}: a grant applied twice"
