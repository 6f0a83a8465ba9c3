"""The read path of ``gameserver.wsdirect``: frames handed straight from the parser keep their order.

A burst sent in one go right after ``login`` (handled asynchronously: the secret is hashed) must be
answered after the ``welcome`` and in order; a fragmented message or a text frame moves the connection to
websockets' queue for good, without reordering or losing anything.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import msgpack
import pytest
from websockets.exceptions import ConnectionClosedError

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


def _ping(rid: int, pad: int = 0) -> bytes:
    """A ping; ``pad`` characters of an extra field (ignored by the server) make it longer."""
    return msgpack.packb({"t": "ping", "rid": rid, **({"pad": "x" * pad} if pad else {})})


def _masked(payload: bytes) -> bytes:
    """One masked binary client frame (FIN set), as RFC 6455 section 5.2 lays it out."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _direct(server) -> list[DirectConnection]:
    return [conn for conn in server.transport.ws.connections if isinstance(conn, DirectConnection)]


async def test_whole_frames_in_one_read_are_split_off_without_websockets_parser(server, clients) -> None:
    c: Raw = await clients(server)
    login = msgpack.packb({"t": "login", "name": "splitter", "secret": "s" * 128, "rid": 1})
    assert len(login) > 125                                        # the 16-bit length form
    pings = [_ping(10 + i, pad=300 * (i % 3 == 0)) for i in range(30)]   # some past 255 bytes
    c.ws.transport.write(_masked(login))
    assert (await c.recv())["t"] == "welcome"
    (conn,) = _direct(server)
    before = conn.split
    c.ws.transport.write(b"".join(_masked(f) for f in pings))
    assert await _pongs(c, 30) == list(range(10, 40))
    assert conn.split - before == 30 and not conn.fell_back


async def test_frames_cut_anywhere_arrive_whole_and_in_order(server, clients) -> None:
    c: Raw = await clients(server)
    await c.login("slicer")
    (conn,) = _direct(server)
    before = conn.split
    stream = b"".join(_masked(_ping(100 + i, pad=200 * (i % 2))) for i in range(60))
    rng = random.Random(7)
    cuts = [0]
    while cuts[-1] < len(stream):   # reads ending inside headers, masks and payloads, some whole frames
        cuts.append(min(len(stream), cuts[-1] + rng.choice((1, 2, 3, 5, 8, 40, 150, 400))))
    for a, b in itertools.pairwise(cuts):
        c.ws.transport.write(stream[a:b])
        await asyncio.sleep(0.001)                                  # separate reads on the server
    assert await _pongs(c, 60) == list(range(100, 160))
    assert 0 < conn.split - before < 60                            # both paths were taken


async def test_a_control_frame_between_data_frames_is_answered_and_keeps_order(server, clients) -> None:
    c: Raw = await clients(server)
    await c.login("pinger")
    ping_frame = bytes([0x89, 0x80 | 4]) + b"\x00\x00\x00\x00" + b"ping"   # masked websocket ping
    pong_waiter = await c.ws.ping(b"ping")   # the client now waits for a pong carrying b"ping"
    data = [_masked(msgpack.packb({"t": "ping", "rid": rid})) for rid in (1, 2)]
    c.ws.transport.write(data[0] + ping_frame + data[1])
    assert await _pongs(c, 2) == [1, 2]
    async with asyncio.timeout(5):
        await pong_waiter                                           # the server answered a control frame


async def test_an_unmasked_frame_closes_with_a_protocol_error(server, clients) -> None:
    c: Raw = await clients(server)
    await c.login("unmasked")
    payload = msgpack.packb({"t": "ping", "rid": 1})
    c.ws.transport.write(bytes([0x82, len(payload)]) + payload + _masked(_ping(2)))
    with pytest.raises(ConnectionClosedError):                      # closed, nothing answered first
        await c.recv()
    assert c.ws.close_code == 1002


async def test_a_frame_past_the_size_limit_closes_with_1009(server, clients) -> None:
    c: Raw = await clients(server)
    await c.login("toobig")
    c.ws.transport.write(bytes([0x82, 0x80 | 127]) + (8 * 1024 * 1024).to_bytes(8, "big") + b"\x00" * 4)
    async with asyncio.timeout(5):
        await c.ws.wait_closed()
    assert c.ws.close_code == 1009


async def test_a_frame_with_reserved_bits_closes_with_a_protocol_error(server, clients) -> None:
    c: Raw = await clients(server)
    await c.login("rsv")
    frame = bytearray(_masked(msgpack.packb({"t": "ping", "rid": 1})))
    frame[0] |= 0x40                                                # RSV1 without a negotiated extension
    c.ws.transport.write(bytes(frame))
    async with asyncio.timeout(5):
        await c.ws.wait_closed()
    assert c.ws.close_code == 1002


async def test_a_backlog_past_64_frames_behind_a_login_pauses_reading_and_resumes(start_server, make_config,
                                                                                  clients) -> None:
    server = await start_server(make_config(limits={"rate_per_sec": 1000.0, "rate_burst": 1000}))
    c: Raw = await clients(server)
    login = msgpack.packb({"t": "login", "name": "backlog", "secret": "s" * 20, "rid": 1})
    burst = b"".join(_masked(_ping(10 + i)) for i in range(100))   # queued behind the login's hashing
    c.ws.transport.write(_masked(login) + burst)
    assert (await c.recv())["t"] == "welcome"
    assert await _pongs(c, 100) == list(range(10, 110))
    c.ws.transport.write(_masked(_ping(500)))                      # a later read: reading was resumed
    assert await _pongs(c, 1) == [500]
