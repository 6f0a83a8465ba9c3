"""Abusive clients, run as a child process of ``test_abuse.py`` (so the attack's own CPU does not sit on the
event loop that measures honest players). One mode per run; prints one JSON line of figures and exits.
Every loop is bounded by ``--seconds`` and by counts.

    python -m tests.reliability.abuse_child MODE --url ws://127.0.0.1:P/ws --seconds S [--count N]

Modes: ``flood`` (hold connections past the server's limit while churning connect/close), ``slowloris``
(TCP connections that send half a handshake and stall), ``noread`` (logged-in clients that never read while
chat floods their room), ``oversize`` (frames over the message limit and over the hard cap), ``chatspam``
(chat far above the rate limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

SECRET = "reliability-secret-0123456789"


async def _ws(url: str, **kw: Any) -> ClientConnection:
    return await connect(url, compression=None, open_timeout=5, close_timeout=1, **kw)


async def flood(url: str, seconds: float, count: int) -> dict[str, Any]:
    """Hold ``count`` connections (more than the server allows) while 8 tasks churn connect/close."""
    out: Counter[str] = Counter()
    held: list[ClientConnection] = []
    deadline = time.monotonic() + seconds

    async def hold() -> None:
        while len(held) + out["hold_refused"] < count and time.monotonic() < deadline:
            try:
                held.append(await _ws(url))
            except InvalidStatus as exc:
                out["hold_refused"] += 1
                out[f"status_{exc.response.status_code}"] += 1
            except (OSError, TimeoutError) as exc:
                out[f"hold_error_{type(exc).__name__}"] += 1

    async def churn() -> None:
        while time.monotonic() < deadline:
            out["attempts"] += 1
            try:
                ws = await _ws(url)
            except InvalidStatus as exc:
                out[f"status_{exc.response.status_code}"] += 1
                continue
            except (OSError, TimeoutError) as exc:
                out[f"error_{type(exc).__name__}"] += 1
                await asyncio.sleep(0.01)
                continue
            out["accepted"] += 1
            await ws.close()

    start = time.monotonic()
    await asyncio.gather(*(hold() for _ in range(4)), *(churn() for _ in range(8)))
    elapsed = time.monotonic() - start
    out["held"] = len(held)
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    total = out["attempts"] + len(held) + out["hold_refused"]
    return {**out, "connects": total, "seconds": round(elapsed, 2), "per_sec": round(total / elapsed)}


async def slowloris(url: str, seconds: float, count: int) -> dict[str, Any]:
    """``count`` sockets send half a request line and stall; how long until the server closes each?"""
    u = urlparse(url)
    start = time.monotonic()

    async def one() -> float | None:
        try:
            reader, writer = await asyncio.open_connection(u.hostname, u.port)
        except OSError:
            return None
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        opened = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                while await reader.read(1024):
                    pass
            return time.monotonic() - opened
        except (TimeoutError, OSError):
            return None if not reader.at_eof() else time.monotonic() - opened
        finally:
            writer.close()

    closed = [t for t in await asyncio.gather(*(one() for _ in range(count))) if t is not None]
    closed.sort()
    return {"opened": count, "closed_by_server": len(closed),
            "close_after_min": round(closed[0], 2) if closed else None,
            "close_after_max": round(closed[-1], 2) if closed else None,
            "seconds": round(time.monotonic() - start, 2)}


async def _login(ws: ClientConnection, name: str) -> None:
    await ws.send(msgpack.packb({"t": "login", "name": name, "secret": SECRET, "rid": 1}))


async def noread(url: str, seconds: float, count: int) -> dict[str, Any]:
    """Clients with a tiny receive buffer log in, then only send chat (within the rate) and never read."""
    conns: list[ClientConnection] = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        u = urlparse(url)
        sock.connect((u.hostname, u.port))
        ws = await _ws(url, sock=sock, max_queue=1)
        await _login(ws, f"noread_{i}")
        conns.append(ws)
    sent = 0
    deadline = time.monotonic() + seconds
    with contextlib.suppress(ConnectionClosed):
        while time.monotonic() < deadline:
            for ws in conns:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(msgpack.packb({"t": "chat", "text": "z" * 200}))
                    sent += 1
            await asyncio.sleep(0.05)   # 20 chats/s per client: under the rate limit
    # now read what is left: did the server give up on us?
    codes: Counter[str] = Counter()
    for ws in conns:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                async for _ in ws:
                    pass
        codes[str(ws.close_code)] += 1
    return {"clients": count, "chats_sent": sent, "close_codes": dict(codes)}


async def oversize(url: str, seconds: float, count: int) -> dict[str, Any]:
    """Half the clients send a 20 KB frame (over the 16 KiB message limit), half a 2 MiB one (hard cap)."""
    codes: Counter[str] = Counter()
    byes: Counter[str] = Counter()

    async def one(i: int) -> None:
        ws = await _ws(url, max_size=None)
        size = 20_000 if i % 2 == 0 else 2 * 2**20
        with contextlib.suppress(ConnectionClosed):
            await ws.send(msgpack.packb({"t": "chat", "text": "o" * size}))
            async with asyncio.timeout(seconds):
                async for frame in ws:
                    msg = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
                    if msg.get("t") == "bye":
                        byes[msg["reason"]] += 1
        codes[f"{'20KB' if i % 2 == 0 else '2MiB'}:{ws.close_code}"] += 1

    await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    return {"clients": count, "close_codes": dict(codes), "byes": dict(byes)}


async def chatspam(url: str, seconds: float, count: int) -> dict[str, Any]:
    """Logged-in clients chat at ~200/s each; count rate_limited errors and the bye."""
    out: Counter[str] = Counter()
    kicked_after: list[float] = []

    async def one(i: int) -> None:
        ws = await _ws(url)
        await _login(ws, f"spammer_{i}")
        start = time.monotonic()
        deadline = start + seconds

        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    msg = msgpack.unpackb(frame)
                    if msg.get("t") == "error":
                        out[f"error_{msg['code']}"] += 1
                    elif msg.get("t") == "bye":
                        out[f"bye_{msg['reason']}"] += 1
                        kicked_after.append(time.monotonic() - start)

        reader = asyncio.create_task(read())
        with contextlib.suppress(ConnectionClosed):
            while time.monotonic() < deadline:
                await ws.send(msgpack.packb({"t": "chat", "text": f"spam {out['sent']}"}))
                out["sent"] += 1
                await asyncio.sleep(0.005)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await reader
        out[f"close_{ws.close_code}"] += 1
        await ws.close()

    await asyncio.gather(*(one(i) for i in range(count)))
    return {**out, "clients": count,
            "kicked_after_max": round(max(kicked_after), 2) if kicked_after else None}


MODES = {"flood": flood, "slowloris": slowloris, "noread": noread, "oversize": oversize, "chatspam": chatspam}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    result = asyncio.run(MODES[args.mode](args.url, args.seconds, args.count))
    print(json.dumps({"mode": args.mode, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
