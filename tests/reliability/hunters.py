"""A test player that hunts mobs near it and records what the server answers: ``xp`` and ``error
internal`` with their arrival times, and its own killing hits (each such kill grants it XP)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time

from shared.client import GameClient, ServerError


class Hunter:
    """Attacks mobs in range; logs ``xp`` and ``error internal`` with the time they arrived, and when its
    own hits killed a mob (each kill grants this hunter XP)."""

    def __init__(self, client: GameClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.acked: list[tuple[float, int]] = []      # (arrival, resulting xp)
        self.internal: list[float] = []
        self.kills: list[float] = []

    async def read(self) -> None:
        """Run as a task: record every ``xp`` and ``error internal`` until the socket closes."""
        async for msg in self.client:
            if msg.t == "xp":
                self.acked.append((time.monotonic(), msg.xp))
            elif msg.t == "error" and msg.code == "internal":
                self.internal.append(time.monotonic())

    async def hunt(self, stop: asyncio.Event) -> None:
        """Run as a task: attack a random live mob within range every 30 ms until ``stop``."""
        world = self.client.world
        while not stop.is_set() and not self.client.closed:
            pos = world.position or (100.0, 100.0)
            near = [mid for mid, (_, x, y, hp) in world.mobs.items()
                    if hp > 0 and math.hypot(x - pos[0], y - pos[1]) < 60.0]
            if near:
                with contextlib.suppress(ServerError):
                    hit = await self.client.attack(self.rng.choice(near))
                    if hit.hp == 0:
                        self.kills.append(time.monotonic())
            await asyncio.sleep(0.03)


async def stop_hunting(stop: asyncio.Event, tasks: list[asyncio.Task[None]],
                       clients: list[GameClient]) -> None:
    """End a hunt: stop the hunters, cancel their tasks, close their clients (each close within 3 s)."""
    stop.set()
    for t in tasks:
        t.cancel()
    for c in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.close(), 3.0)
