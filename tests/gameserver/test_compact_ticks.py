"""The compact tick format: asked for at login, integer positions in tenths of a unit; v1 clients get v1
bytes unchanged in the same room at the same time."""

from __future__ import annotations

import asyncio
import random

import msgpack

from shared.codec import compact_tick, encode_raw, expand_tick
from tests.gameserver.conftest import SECRET


async def test_compact_ticks_are_asked_for_confirmed_and_v1_is_unchanged(server, clients):
    v1 = await clients(server)
    small = await clients(server)
    mover = await clients(server)
    welcome_v1, _ = await v1.login("plain")
    assert "tick_format" not in welcome_v1                                   # v1 welcome as before
    welcome = await small.request({"t": "login", "name": "tiny", "secret": SECRET, "tick_format": "compact"})
    assert welcome["tick_format"] == "compact"
    await small.expect("joined")
    await mover.login("walker")
    await asyncio.sleep(0.2)                                   # the speed limit allows the whole step then
    await mover.send({"t": "move", "x": 512.37, "y": 498.21})

    def positions(tick):
        moved = [tuple(e[1:3]) for e in tick.get("moved", [])]
        return moved + [tuple(e[2:4]) for e in tick.get("joined", [])]

    for _ in range(50):
        tick_v1 = await v1.expect("tick")
        if (512.37, 498.21) in positions(tick_v1):
            break
    else:
        raise AssertionError("the v1 client never saw the move")
    for _ in range(50):
        tick = await small.expect("tick")
        if (5124, 4982) in positions(tick):
            break
    else:
        raise AssertionError("the compact client never saw the move")
    assert all(type(v) is int for xy in positions(tick) for v in xy)
    assert all(type(v) is float for xy in positions(tick_v1) for v in xy)


def test_compact_bodies_are_under_half_the_bytes_of_v1_for_a_dense_tick():
    rng = random.Random(3)
    body = {"t": "tick", "n": 120345, "ts": 1764129600.125,
            "moved": [[pid, rng.uniform(0, 1000), rng.uniform(0, 1000)] for pid in range(1, 561)],
            "joined": [[1000 + i, f"bot{i}", rng.uniform(0, 1000), rng.uniform(0, 1000)] for i in range(5)],
            "left": [7, 9], "mobs": [[3, 40]]}
    for binary in (True, False):
        v1, small = encode_raw(body, binary), encode_raw(compact_tick(body), binary)
        assert len(small) * 2 <= len(v1), (binary, len(v1), len(small))
    back = expand_tick(msgpack.unpackb(encode_raw(compact_tick(body), True)))
    pairs = zip(back["moved"], body["moved"], strict=True)
    assert all(abs(a[1] - b[1]) <= 0.05 and abs(a[2] - b[2]) <= 0.05 for a, b in pairs)
