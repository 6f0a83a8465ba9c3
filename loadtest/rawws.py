"""Hand-rolled asyncio websocket client side for the load generators: one ``asyncio.Protocol`` per player.

Why not a library: a generator must stay much cheaper than the server it drives (one core for 1,000+
players receiving ~20 frames/s each). This speaks what the benchmarks need of RFC 6455 and nothing more: one
HTTP upgrade, masked binary client frames, unmasked server frames, pong for the server's pings, close. No
extensions, no fragmentation on send (the game server does not fragment either).

Subclasses implement ``on_open`` (upgrade accepted), ``on_message(payload, now)`` (one binary or text
message, ``now`` = ``time.perf_counter()`` of the read), ``on_refused(status)`` and ``on_lost(exc)``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from typing import Any

import msgpack

OP_BINARY, OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x2, 0x1, 0x8, 0x9, 0xA
TICK_PREFIX = b"\xa1t\xa4tick"  # msgpack map whose first key is t = "tick": payload[1:8]


_TICK_N_PREFIX = TICK_PREFIX + b"\xa1n"
_unpack_double = struct.Struct(">d").unpack_from
_INT_SIZES = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}


def is_tick(payload: bytes) -> bool:
    """True for a msgpack tick frame (the servers write ``t`` first); no decoding."""
    return payload[1:8] == TICK_PREFIX


def tick_ts(payload: bytes) -> float | None:
    """The `ts` of a msgpack tick frame without decoding its lists (the servers encode `t`, `n`, `ts`
    first); None when the frame is not laid out that way (then it is decoded in full)."""
    if payload[1:10] != _TICK_N_PREFIX or not 0x80 <= payload[0] <= 0x8F:
        return None
    b = payload[10]
    pos = 10 + (1 if b < 0x80 else _INT_SIZES.get(b, 0))
    if pos == 10 or payload[pos : pos + 4] != b"\xa2ts\xcb":
        return None
    return _unpack_double(payload, pos + 4)[0]


class RawWs(asyncio.Protocol):
    """Client end of one websocket over an asyncio transport; counts the bytes it reads."""

    path = "/ws"

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.handshaken = False
        self.closed = False
        self.bytes_in = 0
        self.mask = os.urandom(4)

    # -- hooks --------------------------------------------------------------------------------------
    def on_open(self) -> None:
        """The upgrade was accepted: the socket carries websocket frames from now on."""

    def on_message(self, payload: bytes, now: float) -> None:
        """One data message from the server."""

    def on_refused(self, status: str) -> None:
        """The server answered the upgrade with something else than 101 (e.g. 503)."""

    def on_lost(self, exc: Exception | None) -> None:
        """The socket closed (by either side)."""

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")]).decode("latin-1")
            if " 101 " not in status + " ":
                self.on_refused(status)
                self.close()
                return
            del buf[: end + 4]
            self.handshaken = True
            self.on_open()
        pos = 0
        n_buf = len(buf)
        now = time.perf_counter()
        while n_buf - pos >= 2:
            n = buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if n_buf - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if n_buf - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                hdr = 10
            if n_buf - pos < hdr + n:
                break
            op = buf[pos] & 0x0F
            payload = bytes(buf[pos + hdr : pos + hdr + n])
            pos += hdr + n
            if op == OP_BINARY or op == OP_TEXT:
                self.on_message(payload, now)
            elif op == OP_PING:
                self._send_frame(OP_PONG, payload)
            elif op == OP_CLOSE:
                self.close()
                break
            if self.closed:
                break
        del buf[:pos]

    # -- sending ------------------------------------------------------------------------------------
    def _send_frame(self, op: int, payload: bytes) -> None:
        if self.transport is None or self.closed:
            return
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | op, 0xFE, n)
        else:
            header = struct.pack("!BBQ", 0x80 | op, 0xFF, n)
        # one big-int XOR instead of a per-byte loop (~1 us for a game message)
        key = (self.mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
        self.transport.write(header + self.mask + masked)

    def send(self, msg: dict[str, Any]) -> None:
        """Send one msgpack message in a binary frame (dropped once the socket is closed)."""
        self._send_frame(OP_BINARY, msgpack.packb(msg))

    def close(self) -> None:
        """Close the socket now (no close handshake: the benchmark has nothing more to say)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
