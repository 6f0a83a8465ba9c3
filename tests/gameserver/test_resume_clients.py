"""GameClient against the real server: it resumes by itself after a drop and loses nothing; and a seeded
schedule of random drops and resumes for 50 clients over 100 cycles, where every client's ``seq``
sequence is gap-free and duplicate-free, or each gap is announced by ``recovered: false``."""

from __future__ import annotations

import asyncio
import random
import time
from itertools import pairwise
from typing import Any

import pytest

from gameserver.app import GameServer
from shared.client import ConnectionLost, GameClient
from tests.support import SECRET

from .conftest import url


class Reader:
    """Reads one client's inbox for as long as the test runs (across drops): chats as (seq, text)."""

    def __init__(self, client: GameClient) -> None:
        self.client = client
        self.chats: list[tuple[int, str]] = []
        self.stop = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stop:
            try:
                msg = await self.client.receive(timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionLost:         # its socket is down until the schedule resumes it
                await asyncio.sleep(0.02)
                continue
            if msg.t == "chat":
                self.chats.append((msg.seq, msg.text))

    async def close(self) -> None:
        self.stop = True
        await asyncio.wait_for(self.task, 2.0)

    def texts(self) -> list[str]:
        return [text for _seq, text in self.chats]


async def cut(client: GameClient) -> None:
    """Cut the TCP connection under the client (the server sees a drop, not a close)."""
    conn = client._conn
    assert conn is not None
    conn.ws.transport.abort()


async def until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_game_client_resumes_by_itself_and_gets_every_chat_once_in_order(start_server: Any) -> None:
    server: GameServer = await start_server(auth={"grace_seconds": 10.0})
    a = await GameClient.connect(url(server), timeout=5.0, keepalive=None)
    b = await GameClient.connect(url(server), timeout=5.0, keepalive=None)
    reader = None
    try:
        await a.login("selfheal", SECRET)
        await a.join("arena")
        await b.login("talker2", SECRET)
        await b.join("arena")
        reader = Reader(a)
        said = [f"n{i}" for i in range(40)]
        for i, text in enumerate(said):
            await b.chat(text)
            if i == 15:
                await cut(a)
            await asyncio.sleep(0.01)
        await until(lambda: a.seq.last >= 40 and reader.texts()[-1:] == [said[-1]], 10, "the last chat")
        assert reader.texts() == said
        assert [seq for seq, _ in reader.chats] == list(range(1, 41))
        assert a.drops == 1 and a.resumes == 1 and a.seq.failures == 0 and a.seq.unrecovered == 0
    finally:
        if reader is not None:
            await reader.close()
        await a.close()
        await b.close()


CLIENTS = 50
CYCLES = 100
CYCLE = 0.12            # seconds per cycle: 100 cycles in ~12 s
TALKERS = 4             # chats per cycle, from random connected clients
DROP_P = 0.04           # chance per cycle that a connected client is cut
MAX_DOWN = 6            # scheduled clients stay down 1..MAX_DOWN cycles (auto ones resume at once)


@pytest.mark.timeout(90)
async def test_seeded_drops_and_resumes_of_50_clients_over_100_cycles_lose_nothing_unannounced(
        start_server: Any) -> None:
    rng = random.Random(1313)
    # A small buffer (20 messages; ~TALKERS per cycle), so that long downs overflow it: both recovered
    # and unrecovered resumes happen in the run.
    server: GameServer = await start_server(auth={"grace_seconds": 20.0}, replay={"max_messages": 20},
                                            limits={"idle_timeout": 120.0})
    started = time.monotonic()
    observer = await GameClient.connect(url(server), timeout=5.0, keepalive=None, auto_resume=False)
    clients: list[GameClient] = []
    readers: list[Reader] = []
    try:
        await observer.login("observer", SECRET)
        await observer.join("arena")
        for i in range(CLIENTS):
            c = await GameClient.connect(url(server), timeout=5.0, keepalive=None, auto_resume=i % 2 == 0)
            clients.append(c)
            await c.login(f"chaos{i:02d}", SECRET)
            await c.join("arena")
        watch = Reader(observer)
        readers = [Reader(c) for c in clients]
        down_until: dict[int, int] = {}      # scheduled clients (odd) that are down: back at that cycle
        resumes: list[asyncio.Task[Any]] = []
        said = 0
        for cycle in range(CYCLES):
            t0 = time.monotonic()
            for i, when in list(down_until.items()):
                if when <= cycle:
                    del down_until[i]
                    resumes.append(asyncio.create_task(clients[i].reconnect()))
            up = [i for i, c in enumerate(clients) if i not in down_until and not c.closed]
            for i in rng.sample(up, min(TALKERS, len(up))):
                said += 1
                await clients[i].chat(f"c{cycle}-{said}")
            for i in up:
                if rng.random() < DROP_P:
                    await cut(clients[i])
                    if i % 2:
                        down_until[i] = cycle + rng.randint(1, MAX_DOWN)
            await asyncio.sleep(max(0.0, CYCLE - (time.monotonic() - t0)))
        for i in list(down_until):
            resumes.append(asyncio.create_task(clients[i].reconnect()))
        await asyncio.wait_for(asyncio.gather(*resumes), 20)
        await until(lambda: all(not c.closed for c in clients), 10, "every client back")
        await observer.chat("the end")
        await until(lambda: all(r.texts()[-1:] == ["the end"] for r in readers), 15, "the end everywhere")
    finally:
        for r in [*readers]:
            await r.close()
        for c in clients:
            await c.close()
        await observer.close()
    await watch.close()

    reference = watch.texts()
    assert len(reference) == said + 1 and observer.seq.failures == 0
    drops = replayed = unrecovered = 0
    for c, r in zip(clients, readers, strict=True):
        name = c.character.name if c.character else "?"
        seqs = [seq for seq, _ in r.chats]
        jumps = sum(1 for x, y in pairwise(seqs) if y != x + 1)
        assert c.seq.duplicates == 0 and c.seq.gaps == 0, (name, c.seq.summary())
        assert all(y > x for x, y in pairwise(seqs)), name
        assert jumps <= c.seq.unrecovered, (name, jumps, c.seq.summary())   # each gap announced
        texts = r.texts()
        assert len(set(texts)) == len(texts), name                          # nothing twice
        if c.seq.unrecovered == 0:
            assert texts == reference, (name, c.seq.summary())              # nothing lost, in order
        else:
            it = iter(reference)
            assert all(t in it for t in texts), name                        # in order, a subsequence
        drops += c.drops
        replayed += c.seq.replayed
        unrecovered += c.seq.unrecovered
    resumed = server.metrics.resumes.labels("recovered")._value.get()
    print(f"chaos: {said} chats, {drops} auto drops, {resumed:.0f} recovered resumes ({replayed} messages "
          f"replayed), {unrecovered} unrecovered, {time.monotonic() - started:.1f} s")
    assert resumed > 10 and unrecovered > 0 and replayed > 0, (resumed, unrecovered, replayed)
    assert server.metrics.resumes.labels("unrecovered")._value.get() == unrecovered
    assert time.monotonic() - started < 60
