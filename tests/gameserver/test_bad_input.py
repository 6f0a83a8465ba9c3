"""Hostile or broken input: the offender gets errors (or a bye); the server and other players carry on."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import Raw


async def _bystander_ok(server, clients) -> None:
    other: Raw = await clients(server)
    await other.login("bystander")
    assert (await other.request({"t": "ping"}))["t"] == "pong"
    assert (await other.request({"t": "me"}))["character"]["name"] == "bystander"


@pytest.mark.parametrize(("frame", "code"), [
    (b"\xc1\x00\xff", "bad_frame"),                                   # not msgpack
    (b"\x93\x01\x02\x03", "bad_message"),                             # msgpack, not a map
    ("{not json", "bad_frame"),                                       # JSON garbage
    ("[1,2,3]", "bad_message"),
    ('{"t": 5}', "bad_message"),
    (json.dumps({"t": "move", "x": "1", "y": 2}), "bad_message"),     # wrong field type
    (json.dumps({"t": "top", "n": 1000}), "bad_message"),             # out of range
    (json.dumps({"t": "chat", "text": ""}), "bad_message"),
    (msgpack.packb({"t": "attack", "mob": "one"}), "bad_message"),
    (msgpack.packb({"t": "teleport"}), "unknown_type"),
    ('{"t": "move", "x": NaN, "y": 1}', "bad_frame"),
])
async def test_bad_frames_get_errors_and_connection_stays(server, clients, frame, code):
    c: Raw = await clients(server)
    await c.login("victim")
    await c.ws.send(frame)
    reply = await c.expect("error")
    assert reply["code"] == code
    assert (await c.request({"t": "ping"}))["t"] == "pong"    # still open and served
    await _bystander_ok(server, clients)


async def test_rid_is_echoed_on_validation_errors(server, clients):
    c: Raw = await clients(server)
    await c.ws.send(msgpack.packb({"t": "move", "x": "bad", "y": 0, "rid": 77}))
    reply = await c.recv()
    assert reply["code"] == "bad_message" and reply["rid"] == 77


async def test_oversized_frame_gets_bye_too_large_then_close(server, clients):
    c: Raw = await clients(server)
    await c.login("bigmouth")
    await c.ws.send(msgpack.packb({"t": "chat", "text": "x" * 20_000}))
    got = await c.closed()
    assert got[-1] == {"t": "bye", "reason": "too_large"}
    assert c.ws.close_code == 1009
    await _bystander_ok(server, clients)


async def test_frame_over_the_hard_cap_is_refused_by_the_websocket_layer(server, clients):
    c: Raw = await clients(server)
    with pytest.raises(ConnectionClosed) as info:
        await c.ws.send(b"\x00" * (2 * 1024 * 1024))
        await c.recv()
    # the server read the frame header, refused it and said why: close 1009 naming its cap
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009, info.value
    assert "exceeds limit of 1048576 bytes" in info.value.rcvd.reason
    assert c.ws.close_code == 1009
    await _bystander_ok(server, clients)


async def test_burst_of_1000_messages_is_rate_limited_without_hurting_others(server, clients):
    flooder: Raw = await clients(server)
    await flooder.login("flooder")
    other: Raw = await clients(server)
    await other.login("calm")
    frames = [flooder.encode({"t": "ping", "rid": i}) for i in range(1000)]
    for frame in frames:
        await flooder.ws.send(frame)
    pongs = errors = 0
    async with asyncio.timeout(5):
        while pongs + errors < 61:
            msg = await flooder.recv()
            pongs += msg["t"] == "pong"
            errors += msg["t"] == "error" and msg["code"] == "rate_limited"
    assert 55 <= pongs <= 70 and errors == 1    # burst of 60 answered; one rate_limited error per second
    assert (await other.request({"t": "ping"}))["t"] == "pong"
    assert server.health()["status"] == "ok"


async def test_sustained_flood_gets_bye_rate_limited(start_server, clients):
    server = await start_server(limits={"rate_per_sec": 20, "rate_burst": 10, "rate_kick_after": 0.5})
    c: Raw = await clients(server)
    await c.login("spammer")
    reader = asyncio.ensure_future(c.closed(wait=5))

    async def spam() -> None:
        try:
            while True:
                await c.send({"t": "ping"})
                await asyncio.sleep(0.005)
        except ConnectionClosed:
            pass

    async with asyncio.timeout(5):
        await spam()
    got = await reader
    assert got[-1] == {"t": "bye", "reason": "rate_limited"}
    assert [m["code"] for m in got if m["t"] == "error"] == ["rate_limited"]  # at most one per second
    assert c.ws.close_code == 1008
    await _bystander_ok(server, clients)


async def test_idle_socket_gets_bye_idle(start_server, clients):
    server = await start_server(limits={"idle_timeout": 0.3})
    c: Raw = await clients(server)
    await c.login("sleepy")
    got = await c.closed(wait=3)
    assert got[-1] == {"t": "bye", "reason": "idle"}


async def test_other_http_paths_are_404(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status = await reader.readline()
    assert b" 404 " in status
    writer.close()
