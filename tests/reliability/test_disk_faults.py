"""Disk faults through the server: ENOSPC / EIO injected on write and on fsync (``datastore.fileio``) for 3 s
while players kill mobs and log in.

While the fault lasts, XP grants wait (retried with the same grant id, ``persist.grant_retry_for`` is 30 s):
none is acknowledged and none is answered ``error internal``; ``/health`` says ``degraded`` (503). A first
login (which creates the record) is answered ``error internal``. The server keeps serving (pings answered,
ticks flowing). When the fault clears, the grants made during it are stored and acknowledged, new logins
succeed, ``/health`` is ``ok`` again, and after a restart on the same directory every acknowledged grant is
there, each once, and every stored grant was acknowledged. The server runs in this process (faults are
process-global), with a real file store in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from pathlib import Path
from typing import Any

import pytest

from datastore import Key, fileio, open_store
from gameserver.app import GameServer
from shared.client import GameClient, ServerError
from tests.support import SECRET, server_config

from .conftest import percentile
from .hunters import Hunter, stop_hunting

XP = 10
FAULT_SECONDS = 3.0


def fault_config(tmp_path: Path) -> Any:
    return server_config(
        tmp_path / "data",
        game={"tick_rate": 20.0, "start_room": "arena",
              "rules": {"attack_cooldown": 0.0, "respawn_seconds": 0.1, "dmg_min": 10, "dmg_max": 10}},
        rooms=[{"name": "town"},
               {"name": "arena", "width": 200.0, "height": 200.0, "mob_count": 36, "mob_hp": 20,
                "mob_xp": XP}],
        store={"durability": "fsync"},
        persist={"grant_backoff_max": 0.5, "recent_grants": 3000, "flush_interval": 0.5},
    )


async def _health(port: int) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(("kind", "code"), [
    ("write", errno.ENOSPC), ("write", errno.EIO), ("fsync", errno.EIO), ("fsync", errno.ENOSPC),
])
async def test_disk_fault_grants_wait_and_are_acknowledged_after_it_clears_server_keeps_serving(
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

        # -- fault on: grants wait, first logins fail, pings and ticks go on, /health degraded
        runner = server.runners["arena"]
        ticks0 = runner.n
        fault_start = time.monotonic()
        fileio.set_fault(kind, code)
        rtts: list[float] = []
        login_error = ""
        health_during: list[tuple[int, str]] = []
        pending_max = 0
        try:
            newbie = await GameClient.connect(url, timeout=5.0)
            clients.append(newbie)
            try:
                await newbie.login("newbie_fault", SECRET)
            except ServerError as exc:
                login_error = exc.code
            while time.monotonic() - fault_start < FAULT_SECONDS:
                rtts.append(await pinger.ping())
                if len(rtts) % 10 == 0:
                    status, body = await _health(server.port)
                    health_during.append((status, body["status"]))
                pending_max = max(pending_max, len(server.grants.pending))
                await asyncio.sleep(0.05)
        finally:
            fileio.clear_faults()
        fault_end = time.monotonic()
        ticks_during = runner.n - ticks0
        kills_in_fault = sum(1 for h in hunters for t in h.kills if fault_start + 0.3 <= t <= fault_end)

        # -- fault off: the waiting grants are stored and acknowledged, everything works again
        await asyncio.sleep(1.5)
        late = await GameClient.connect(url, timeout=5.0)
        clients.append(late)
        welcome = await late.login("newbie_after", SECRET)
        stop.set()
        for _ in range(100):   # grants in flight get acknowledged (bounded: 5 s)
            if not server.grants.pending:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        health_after = await _health(server.port)
        internal = sum(len(h.internal) for h in hunters)
        acked_in_fault = sum(1 for h in hunters for t, _ in h.acked
                             if fault_start + 0.3 <= t <= fault_end)
        acked_after = sum(1 for h in hunters for t, _ in h.acked if t > fault_end)
        acked = {f"miner_{i}": [x for _, x in h.acked] for i, h in enumerate(hunters)}
        failures = {why: server.metrics.grant_failures.labels(why)._value.get()
                    for why in ("final", "gave_up", "overflow", "shutdown")}
    finally:
        await stop_hunting(stop, tasks, clients)
        await server.stop()
        fileio.clear_faults()

    # -- restart on the same directory: every acknowledged grant present, each once, none unacknowledged
    store = await open_store(config.store.resolved_url())
    stored: dict[str, tuple[int, list[str]]] = {}
    try:
        for name in acked:
            rec = await store.get(Key("game", "characters", name))
            assert rec is not None
            stored[name] = (int(rec.bins["xp"]), list(rec.bins["grants"]))
        assert await store.get(Key("game", "characters", "newbie_fault")) is None
    finally:
        await store.close()

    print(f"\ndisk fault {kind} {errno.errorcode[code]} for {FAULT_SECONDS} s: "
          f"grants acked before {before_fault}; during the fault: kills {kills_in_fault}, "
          f"grants waiting max {pending_max}, acked {acked_in_fault}, error internal {internal}; "
          f"acked after clear {acked_after}; /health during {sorted(set(health_during))}, "
          f"after {health_after[0]} {health_after[1]['status']}; first login during fault -> "
          f"{login_error or 'ok'}; pings {len(rtts)} p50 {percentile(rtts, 50) * 1000:.1f} ms "
          f"max {max(rtts) * 1000:.1f} ms; ticks during fault {ticks_during} "
          f"(expected ~{int(FAULT_SECONDS * 20)}); stored grants {[len(v[1]) for v in stored.values()]} "
          f"vs acked {[len(v) for v in acked.values()]}; failures {failures}")
    assert login_error == "internal"
    assert kills_in_fault > 0 and pending_max > 0, "the hunters made grants during the fault"
    assert acked_in_fault == 0, "nothing is acknowledged while the disk fails"
    assert internal == 0 and not any(failures.values()), "no grant gives up during a 3 s fault"
    assert acked_after >= kills_in_fault, "the grants made during the fault are acknowledged after it"
    assert (503, "degraded") in health_during and health_after[0] == 200, (health_during, health_after)
    assert welcome.character.name == "newbie_after"
    assert max(rtts) < 1.0 and len(rtts) >= FAULT_SECONDS / 0.1
    assert ticks_during >= FAULT_SECONDS * 20 * 0.8
    for name, (xp, grants) in stored.items():
        assert len(set(grants)) == len(grants) and xp == XP * len(grants), f"{name}: a grant applied twice"
        assert len(grants) == len(acked[name]), f"{name}: {len(grants)} stored, {len(acked[name])} acked"
        assert xp == max(acked[name]), f"{name}: the last acknowledged xp is the stored xp"
