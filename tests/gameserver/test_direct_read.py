"""The read path of ``gameserver.wsdirect``: frames handed straight from the parser keep their order.

A burst sent in one go right after ``login`` (handled asynchronously: the secret is hashed) must be
answered after the ``welcome`` and in order; a fragmented message or a text frame moves the connection to
websockets' queue for good, without reordering or losing anything.
"""

from __future__ import annotations

import msgpack

from gameserver.wsdirect import DirectConnection

from .conftest import Raw


async def _pongs(c: Raw, n: int) -> list[int]:
    rids = []
    while len(rids) < n:
        msg = await c.recv()
        if msg["t"] == "pong":
            rids.append(msg["rid"])
    return rids


async def test_frames_sent_behind_a_login_are_answered_after_it_in_order(server, clients) -> None:
    c: Raw = await clients(server)
    frames = [msgpack.packb({"t": "login", "name": "burst", "secret": "s" * 20, "rid": 1})]
    frames += [msgpack.packb({"t": "ping", "rid": 10 + i}) for i in range(20)]
    c.ws.transport.write(b"".join(_masked(f) for f in frames))   # one TCP write: all in one read
    first = await c.recv()
    assert first["t"] == "welcome" and first["rid"] == 1
    assert await _pongs(c, 20) == list(range(10, 30))


async def test_a_fragmented_message_switches_to_the_queue_without_reordering(server, clients) -> None:
    c: Raw = await clients(server)
    await c.login("fragments")
    conns = [conn for conn in server.transport.ws.connections if isinstance(conn, DirectConnection)]
    assert conns and all(conn.direct is not None for conn in conns)   # the direct path is in use
    await c.ws.send(msgpack.packb({"t": "ping", "rid": 50}))
    whole = msgpack.packb({"t": "ping", "rid": 51})
    await c.ws.send([whole[:3], whole[3:]])                      # one message in two frames
    for rid in (52, 53):
        await c.ws.send(msgpack.packb({"t": "ping", "rid": rid}))
    assert await _pongs(c, 4) == [50, 51, 52, 53]
    assert any(conn.fell_back for conn in server.transport.ws.connections)


async def test_text_frames_take_websockets_path_and_are_answered(server, clients) -> None:
    c: Raw = await clients(server, binary=False)
    await c.login("texter")
    for rid in (60, 61, 62):
        await c.send({"t": "ping", "rid": rid})
    assert await _pongs(c, 3) == [60, 61, 62]


def _masked(payload: bytes) -> bytes:
    """One masked binary client frame (FIN set), as RFC 6455 section 5.2 lays it out."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
