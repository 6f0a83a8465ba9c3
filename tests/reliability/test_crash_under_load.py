"""Crash under load: SIGKILL the server at random moments while bots kill mobs; nothing acknowledged is lost
and no grant is applied twice.

The server runs as a subprocess with the embedded datastore (``durability=fsync``, then ``flush``). Bots are
``GameClient``s in this process; each logs every ``xp`` message it receives (an acknowledged grant). Every mob
gives the same XP, and the server keeps every grant id of the run in the record (``persist.recent_grants`` is
larger than the number of grants), so after the run, for every character:

- the record's grant ids are distinct and ``xp == XP_PER_KILL * len(grant ids)`` (each stored grant applied
  exactly once: no double application, no lost update);
- every acknowledged ``xp`` value is a distinct multiple of ``XP_PER_KILL`` no larger than the stored xp, and
  the acknowledged grants are at most the stored ones (none lost); what is stored but was never
  acknowledged (in flight at a kill) is counted and printed;
- after every restart the ``welcome`` shows at least the largest xp acknowledged before the crash;
- levels (stored and acknowledged) follow ``1 + floor(sqrt(xp / 100))``.

Sizes: ``RELIABILITY_BOTS`` (CI 60, full 300), ``RELIABILITY_KILLS`` (5).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from datastore import Key, open_store
from shared.client import ConnectionLost, GameClient, ServerError
from tests.support import SECRET

from .conftest import ServerProcess, server_config, sized

BOTS = sized("RELIABILITY_BOTS", 60, 300)
KILLS = sized("RELIABILITY_KILLS", 5, 5)
XP_PER_KILL = 10
RECENT_GRANTS = 3000
RUN_LIMIT = 150.0   # seconds: the whole scenario stops by itself after this


def level_for(xp: int) -> int:
    return 1 + math.isqrt(xp // 100)


def crash_config() -> dict[str, Any]:
    """One small arena full of 2-hit mobs around the spawn point, fast respawn, all grant ids kept."""
    return server_config(
        limits={"idle_timeout": 30.0},
        game={"tick_rate": 20.0, "start_room": "arena",
              "rules": {"attack_cooldown": 0.05, "respawn_seconds": 0.3, "dmg_min": 10, "dmg_max": 10}},
        rooms=[{"name": "town"},
               {"name": "arena", "width": 240.0, "height": 240.0, "mob_count": 64, "mob_hp": 20,
                "mob_xp": XP_PER_KILL}],
        persist={"recent_grants": RECENT_GRANTS, "flush_interval": 1.0},
    )


@dataclass
class CrashBot:
    name: str
    url: str
    rng: random.Random
    acked: list[tuple[int, int, int]] = field(default_factory=list)   # (gained, xp, level) per xp message
    logins: int = 0
    resumes: int = 0
    drops: int = 0
    welcome_regressions: list[tuple[int, int]] = field(default_factory=list)   # (welcome xp, max acked)
    errors: list[str] = field(default_factory=list)
    client: GameClient | None = None
    last_drop: str = ""

    @property
    def max_acked(self) -> int:
        return max((xp for _, xp, _ in self.acked), default=0)

    async def run(self, stop: asyncio.Event, deadline: float) -> None:
        backoff = 0.1
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                welcome = await self._enter()
                backoff = 0.1
                if welcome.character.xp < self.max_acked:
                    self.welcome_regressions.append((welcome.character.xp, self.max_acked))
                await self._play(stop)
            except (OSError, ConnectionError, TimeoutError, ConnectionClosed, InvalidHandshake,
                    ServerError) as exc:
                self.drops += 1
                self.last_drop = repr(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, 1.0)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 3.0)

    async def _enter(self) -> Any:
        """Fresh login the first time; afterwards resume, and log in again when the session is gone."""
        if self.client is None:
            self.client = await GameClient.connect(self.url, timeout=5.0)
            self.logins += 1
            return await self.client.login(self.name, SECRET)
        try:
            welcome = await self.client.reconnect()
            self.resumes += 1
            return welcome
        except ServerError as exc:   # bad_token: the restarted server does not know the session
            if exc.code != "bad_token":
                raise
        self.logins += 1
        return await self.client.login(self.name, SECRET)

    async def _read(self, client: GameClient) -> None:
        async for msg in client:
            if msg.t == "xp":
                self.acked.append((msg.gained, msg.xp, msg.level))
            elif msg.t == "error" and msg.code == "internal":
                self.errors.append(msg.message)

    async def _play(self, stop: asyncio.Event) -> None:
        client = self.client
        assert client is not None
        reader = asyncio.create_task(self._read(client))
        try:
            while not stop.is_set():
                if client.closed:   # the world is frozen on a dead socket: go reconnect
                    raise ConnectionLost("connection lost")
                mob = self._pick_mob(client)
                if mob is None:
                    await asyncio.sleep(0.1)
                    continue
                with contextlib.suppress(ServerError):   # no_such_mob / cooldown: just pick again
                    await client.attack(mob)
                await asyncio.sleep(0.04 + 0.06 * self.rng.random())
            await asyncio.sleep(1.5)   # let grants in flight be acknowledged before closing
        finally:
            # the inbox ends with the connection: the reader drains every xp that arrived before a drop
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, 3.0)

    def _pick_mob(self, client: GameClient) -> int | None:
        pos = client.world.position
        if pos is None:
            return None
        near = [mid for mid, (_, x, y, hp) in client.world.mobs.items()
                if hp > 0 and math.hypot(x - pos[0], y - pos[1]) < 60.0]
        return self.rng.choice(near) if near else None


async def _run_scenario(workdir: Path, durability: str) -> dict[str, Any]:
    server = ServerProcess(workdir, crash_config(), durability=durability)
    rng = random.Random(f"crash-{durability}")
    start = time.monotonic()
    deadline = start + RUN_LIMIT
    server.start()
    stop = asyncio.Event()
    bots = [CrashBot(f"crash_{i:04d}", server.url, random.Random(i)) for i in range(BOTS)]

    async def start_bot(i: int, bot: CrashBot) -> None:
        await asyncio.sleep(1.0 * i / BOTS)
        await bot.run(stop, deadline)

    tasks = [asyncio.create_task(start_bot(i, b)) for i, b in enumerate(bots)]
    kills: list[dict[str, Any]] = []
    try:
        for k in range(KILLS):
            # let the bots get back in and earn XP, then kill at a random moment
            settle_until = time.monotonic() + 15.0
            acked_before = sum(len(b.acked) for b in bots)
            while time.monotonic() < settle_until:  # poll counters the bots update
                if sum(len(b.acked) for b in bots) >= acked_before + BOTS:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            at = sum(len(b.acked) for b in bots)
            server.kill()
            down = rng.uniform(0.1, 0.6)
            await asyncio.sleep(down)
            t0 = time.monotonic()
            await asyncio.to_thread(server.start)
            down += time.monotonic() - t0
            kills.append({"kill": k + 1, "acked_at_kill": at, "down_s": round(down, 2)})
        await asyncio.sleep(3.0)
    finally:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=20.0)
        for t in pending:
            t.cancel()
        await asyncio.to_thread(server.stop)

    store = await open_store(f"file://{server.data}?durability=fsync")
    per_char: list[dict[str, Any]] = []
    try:
        for bot in bots:
            rec = await store.get(Key("game", "characters", bot.name))
            per_char.append({"bot": bot, "rec": rec})
    finally:
        await store.close()
    return {"server": server, "bots": bots, "kills": kills, "chars": per_char,
            "seconds": time.monotonic() - start, "pending": len(pending)}


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["fsync", "flush"])
async def test_sigkill_under_load_loses_no_acknowledged_xp_and_applies_no_grant_twice(
        tmp_path: Path, durability: str) -> None:
    result = await _run_scenario(tmp_path, durability)
    bots: list[CrashBot] = result["bots"]
    problems: list[str] = []
    total_acked = total_stored = total_unacked = max_unacked = 0
    for entry in result["chars"]:
        bot: CrashBot = entry["bot"]
        rec = entry["rec"]
        if rec is None:
            problems.append(f"{bot.name}: no record")
            continue
        xp, grants, level = int(rec.bins["xp"]), list(rec.bins["grants"]), int(rec.bins["level"])
        acked_xps = [a_xp for _, a_xp, _ in bot.acked]
        if len(set(grants)) != len(grants):
            problems.append(f"{bot.name}: duplicate grant ids in the record")
        if len(grants) >= RECENT_GRANTS:
            problems.append(f"{bot.name}: grant list truncated, cannot check")
        if xp != XP_PER_KILL * len(grants):
            problems.append(f"{bot.name}: xp {xp} != {XP_PER_KILL} x {len(grants)} stored grants")
        if level != level_for(xp):
            problems.append(f"{bot.name}: stored level {level} for xp {xp}")
        if acked_xps and max(acked_xps) > xp:
            problems.append(f"{bot.name}: acknowledged xp {max(acked_xps)} > stored {xp} (lost)")
        if len(set(acked_xps)) != len(acked_xps):
            problems.append(f"{bot.name}: two acknowledgements report the same xp (lost update)")
        if any(a % XP_PER_KILL or a <= 0 for a in acked_xps):
            problems.append(f"{bot.name}: acknowledged xp not a multiple of {XP_PER_KILL}")
        if any(g != XP_PER_KILL or lv != level_for(a) for g, a, lv in bot.acked):
            problems.append(f"{bot.name}: acknowledged gain/level inconsistent")
        if sum(g for g, _, _ in bot.acked) > xp:
            problems.append(f"{bot.name}: acknowledged gains exceed stored xp")
        if bot.welcome_regressions:
            problems.append(f"{bot.name}: welcome after restart below acked xp {bot.welcome_regressions}")
        unacked = len(grants) - len(bot.acked)
        if unacked < 0:
            problems.append(f"{bot.name}: {len(bot.acked)} grants acknowledged, only {len(grants)} stored")
        total_acked += len(bot.acked)
        total_stored += len(grants)
        total_unacked += unacked
        max_unacked = max(max_unacked, unacked)
    logins = sum(b.logins for b in bots)
    resumes = sum(b.resumes for b in bots)
    print(f"\ncrash under load ({durability}): {len(bots)} bots, {len(result['kills'])} SIGKILLs, "
          f"{result['seconds']:.1f} s")
    for k in result["kills"]:
        print(f"  kill {k['kill']}: {k['acked_at_kill']} grants acknowledged so far, down {k['down_s']} s")
    print(f"  grants acknowledged {total_acked}, stored {total_stored}, stored but never acknowledged "
          f"{total_unacked} (max {max_unacked} per character; in flight at a kill)")
    print(f"  logins {logins}, resumes {resumes}, drops {sum(b.drops for b in bots)}, "
          f"error internal {sum(len(b.errors) for b in bots)}, bot tasks left {result['pending']}")
    print(f"  last drop reasons: {sorted({b.last_drop[:80] for b in bots})[:5]}")
    print(f"  problems: {len(problems)}")
    for line in problems[:20]:
        print("   ", line)
    assert not problems
    assert len(result["kills"]) == KILLS
    assert total_acked > BOTS                       # the bots really played
    # nearly every bot got XP (with 300 bots on 64 mobs a few can lose every race for a kill)
    assert sum(1 for b in bots if b.acked) >= 0.9 * len(bots)
    # a grant stored but never acknowledged was in flight at a kill: a few per character at most
    assert max_unacked <= 4 * (KILLS + 1), max_unacked
    assert not result["server"].log_errors(), result["server"].log_errors()[:5]
