"""Minimal blocking websocket client for locust users (gevent-friendly).

Why not `websocket-client`: under gevent it costs more CPU per message than this ~150-line client (see
docs/load-testing.md), and a load generator must stay cheaper than the server it drives. The client speaks
RFC 6455 for what the game needs: one HTTP upgrade, masked client frames, unmasked server frames, ping/pong
and close. No extensions (the game server does not negotiate permessage-deflate).

It uses the `socket` module, which locust monkey-patches with gevent: connecting and sending block only the
calling greenlet. Receiving: `Reactor` (one epoll greenlet per process, used by the locustfile) reads every
connection and calls a handler per message; `recv_frame()` is the simple blocking alternative.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

from loadtest.rawws import tick_ts

__all__ = ["Reactor", "WSClient", "WSClosed", "WSHandshakeError", "tick_ts"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 4 * 1024 * 1024
EPOLLIN = getattr(select, "EPOLLIN", 0x001)  # gevent's patched select may lack it


class WSClosed(Exception):
    """The connection is closed: `code` is the close code (1006 when the socket just dropped)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class WSHandshakeError(Exception):
    """The HTTP upgrade failed (bad status or malformed answer)."""


def _xor(payload: bytes, mask: bytes) -> bytes:
    # One big-int XOR instead of a per-byte loop: ~1 us for the game's small client messages.
    n = len(payload)
    if n == 0:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class WSClient:
    """One websocket connection. Not thread-safe; fine for greenlets (sendall is atomic per call)."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(leftover)
        self.fd = sock.fileno()
        self._fragments: list = []
        self.pending_frames: list[tuple[int, bytes]] = []
        self.mask = os.urandom(4)
        self.closed = False
        self.bytes_in = 0
        self.bytes_out = 0

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> WSClient:
        """Open a TCP connection to `url` (ws://host:port/path) and do the upgrade; raises OSError,
        WSHandshakeError or TimeoutError."""
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// urls are supported, got {url!r}")
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise WSHandshakeError("connection closed during handshake")
                data += chunk
                if len(data) > 65536:
                    raise WSHandshakeError("handshake answer too long")
            head, _, rest = data.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise WSHandshakeError(f"upgrade refused: {status.decode(errors='replace')}")
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    # -- sending ------------------------------------------------------------------------------------

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.closed:
            raise WSClosed(1006, "send on closed socket")
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        frame = header + self.mask + _xor(payload, self.mask)
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            self.closed = True
            raise WSClosed(1006, f"send failed: {exc}") from exc
        self.bytes_out += len(frame)

    def send_binary(self, payload: bytes) -> None:
        self._send(OP_BINARY, payload)

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        """Send a close frame (best effort) and close the socket; idempotent."""
        if self.closed:
            return
        try:
            self._send(OP_CLOSE, struct.pack("!H", code))
        except WSClosed:
            pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    # -- receiving ----------------------------------------------------------------------------------

    def parse_frames(self, out: list[tuple[int, bytes]]) -> None:
        """Move every complete data message in the buffer to `out`; answer pings; raise WSClosed on a
        close frame. Incomplete bytes stay buffered (fragments are kept across calls)."""
        buf = self.buf
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                n = b1 & 0x7F
                hdr = 2
                if n == 126:
                    if end - pos < 4:
                        break
                    n = (buf[pos + 2] << 8) | buf[pos + 3]
                    hdr = 4
                elif n == 127:
                    if end - pos < 10:
                        break
                    n = struct.unpack_from("!Q", buf, pos + 2)[0]
                    hdr = 10
                if n > MAX_FRAME:
                    self.close(1009)
                    raise WSClosed(1009, "frame too big")
                masked = b1 & 0x80
                if end - pos < hdr + (4 if masked else 0) + n:
                    break
                if masked:
                    mask = bytes(buf[pos + hdr : pos + hdr + 4])
                    hdr += 4
                    payload = _xor(bytes(buf[pos + hdr : pos + hdr + n]), mask)
                else:
                    payload = bytes(buf[pos + hdr : pos + hdr + n])
                pos += hdr + n
                op = b0 & 0x0F
                if op == OP_BINARY or op == OP_TEXT:
                    if b0 & 0x80:
                        out.append((op, payload))
                    else:
                        self._fragments = [op, payload]
                elif op == OP_CONT and self._fragments:
                    self._fragments.append(payload)
                    if b0 & 0x80:
                        first, *parts = self._fragments
                        self._fragments = []
                        out.append((first, b"".join(parts)))
                elif op == OP_PING:
                    self._send(OP_PONG, payload)
                elif op == OP_CLOSE:
                    code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                    self.close(code if code not in (1005, 1006) else 1000)
                    raise WSClosed(code, payload[2:].decode(errors="replace"))
        finally:
            del buf[:pos]

    def read_available(self) -> None:
        """Non-blocking read of what the kernel holds (the reactor calls this when the fd is readable);
        raises WSClosed when the peer has gone."""
        try:
            chunk = os.read(self.fd, 262144)
        except BlockingIOError:
            return
        except OSError as exc:
            self.closed = True
            raise WSClosed(1006, f"recv failed: {exc}") from exc
        self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        """Append received bytes; an empty read means the peer closed the socket."""
        if not chunk:
            self.closed = True
            raise WSClosed(1006, "connection dropped")
        self.bytes_in += len(chunk)
        self.buf += chunk

    def recv_frame(self) -> tuple[int, bytes]:
        """Block this greenlet until the next data message; returns (opcode, payload). For simple
        scripts; locust users read through the `Reactor` instead."""
        out: list[tuple[int, bytes]] = []
        while True:
            if self.pending_frames:
                return self.pending_frames.pop(0)
            self.parse_frames(out)
            if out:
                self.pending_frames.extend(out)
                out.clear()
                continue
            try:
                chunk = self.sock.recv(262144)
            except OSError as exc:
                self.closed = True
                raise WSClosed(1006, f"recv failed: {exc}") from exc
            self._take(chunk)


FrameHandler = Callable[[int, bytes], None]
CloseHandler = Callable[[WSClosed], None]


class Reactor:
    """One greenlet per process that reads every registered connection through epoll.

    A greenlet per socket costs two hub switches per frame; this loop wakes once per batch of ready
    sockets and calls the handlers directly (they must not block: no waiting in them). Linux only.
    """

    _instance: Reactor | None = None

    def __init__(self) -> None:
        import gevent
        from gevent import monkey

        epoll = monkey.get_original("select", "epoll")
        self.ep = epoll()
        self.conns: dict[int, tuple[WSClient, FrameHandler, CloseHandler]] = {}
        self.greenlet = gevent.spawn(self._loop)

    @classmethod
    def get(cls) -> Reactor:
        """The process's reactor (created on first use, so after locust forked its workers)."""
        if cls._instance is None or cls._instance.greenlet.dead:
            cls._instance = cls()
        return cls._instance

    def register(self, ws: WSClient, on_frame: FrameHandler, on_close: CloseHandler) -> None:
        """Start delivering ws's messages to on_frame (in the reactor greenlet); on_close once at the end."""
        self.conns[ws.fd] = (ws, on_frame, on_close)
        self.ep.register(ws.fd, EPOLLIN)
        if ws.buf:
            self._readable(ws.fd, read=False)

    def unregister(self, ws: WSClient) -> None:
        """Stop reading ``ws``; a no-op when its fd number now belongs to another connection (a closed
        socket's number is reused by the next one opened: unregistering by number would orphan it)."""
        entry = self.conns.get(ws.fd)
        if entry is not None and entry[0] is ws:
            del self.conns[ws.fd]
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(ws.fd)

    def _loop(self) -> None:
        from gevent.socket import wait_read

        ep = self.ep
        while True:
            wait_read(ep.fileno())
            for fd, _events in ep.poll(0, 1024):
                self._readable(fd)

    def _readable(self, fd: int, read: bool = True) -> None:
        entry = self.conns.get(fd)
        if entry is None:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)
            return
        ws, on_frame, on_close = entry
        frames: list[tuple[int, bytes]] = []
        try:
            if read:
                ws.read_available()
            ws.parse_frames(frames)
        except WSClosed as exc:
            for op, payload in frames:
                on_frame(op, payload)
            self.unregister(ws)
            on_close(exc)
            return
        for op, payload in frames:
            on_frame(op, payload)
