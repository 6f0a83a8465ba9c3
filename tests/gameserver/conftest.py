"""Fixtures for gameserver tests: an in-process server on a free port with a real ``file://`` datastore
in ``tmp_path`` (``tests.support.config_dict`` plus a small world), small limits so tests run fast, and a
raw websocket client that validates every server message against the ``shared`` models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gameserver.app import GameServer
from gameserver.config import ServerConfig, build_config, deep_merge
from shared.codec import decode_server
from tests.support import FAST_RULES, SECRET, config_dict

TIMEOUT = 5.0

# A small world: town, and an arena whose weak mobs sit right next to its centre (the spawn point).
ARENA_MOBS = [
    {"id": 1, "kind": "slime", "x": 100.0, "y": 110.0, "hp": 30, "xp": 7},
    {"id": 2, "kind": "slime", "x": 110.0, "y": 100.0, "hp": 30, "xp": 7},
    {"id": 3, "kind": "slime", "x": 190.0, "y": 190.0, "hp": 30, "xp": 7},
]


def base_config(tmp_path: Path) -> dict[str, Any]:
    return config_dict(
        tmp_path / "data",
        log_level="DEBUG",
        limits={"idle_timeout": 5.0, "close_timeout": 1.0},
        auth={"grace_seconds": 1.0},
        game={"tick_rate": 50.0, "rules": FAST_RULES},
        rooms=[
            {"name": "town", "width": 1000.0, "height": 1000.0},
            {"name": "arena", "width": 200.0, "height": 200.0, "mobs": ARENA_MOBS},
        ],
        persist={"flush_interval": 0.2},
    )


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., ServerConfig]:
    def make(**overrides: Any) -> ServerConfig:
        return build_config(deep_merge(base_config(tmp_path), overrides))
    return make


@pytest.fixture
async def start_server(make_config: Callable[..., ServerConfig]) -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(**config_overrides)`` -> running GameServer; all stopped at teardown."""
    servers: list[GameServer] = []

    async def start(config: ServerConfig | None = None, **overrides: Any) -> GameServer:
        server = GameServer(config or make_config(**overrides))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(start_server: Callable[..., Any]) -> GameServer:
    return await start_server()


def url(server: GameServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


class Raw:
    """Minimal raw client: sends dicts in one encoding, returns validated server messages as dicts."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.buffer: list[dict[str, Any]] = []
        self.rid = 0

    @classmethod
    async def connect(cls, server: GameServer, *, binary: bool = True, **kwargs: Any) -> Raw:
        ws = await connect(url(server), compression=None, max_size=None, **kwargs)
        return cls(ws, binary)

    def encode(self, msg: dict[str, Any]) -> bytes | str:
        return msgpack.packb(msg) if self.binary else json.dumps(msg)

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(self.encode(msg))

    async def recv_frame(self, wait: float = TIMEOUT) -> bytes | str:
        async with asyncio.timeout(wait):
            return await self.ws.recv()

    async def recv(self, wait: float = TIMEOUT) -> dict[str, Any]:
        """Next message (buffered first); validated by the shared models, returned as a plain dict."""
        if self.buffer:
            return self.buffer.pop(0)
        frame = await self.recv_frame(wait)
        decode_server(frame, validate=True)   # raises if the server broke the wire contract
        return decode_server(frame, validate=False)

    async def expect(self, t: str, wait: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        """Skip messages until one of type ``t`` (and matching fields) arrives; others are kept."""
        kept: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(wait):
                while True:
                    msg = await self.recv(wait)
                    if msg["t"] == t and all(msg.get(k) == v for k, v in match.items()):
                        return msg
                    if msg["t"] != "tick":
                        kept.append(msg)
        finally:
            self.buffer[:0] = kept

    async def request(self, msg: dict[str, Any], wait: float = TIMEOUT) -> dict[str, Any]:
        """Send with a fresh rid and return the reply carrying it."""
        self.rid += 1
        rid = self.rid
        await self.send({**msg, "rid": rid})
        kept: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(wait):
                while True:
                    reply = await self.recv(wait)
                    if reply.get("rid") == rid:
                        return reply
                    if reply["t"] != "tick":
                        kept.append(reply)
        finally:
            self.buffer[:0] = kept

    async def login(self, name: str, secret: str = SECRET) -> tuple[dict[str, Any], dict[str, Any]]:
        welcome = await self.request({"t": "login", "name": name, "secret": secret})
        assert welcome["t"] == "welcome", welcome
        joined = await self.expect("joined")
        assert "rid" not in joined
        return welcome, joined

    async def closed(self, wait: float = TIMEOUT) -> list[dict[str, Any]]:
        """Read until the socket closes; returns what arrived (ticks dropped)."""
        got: list[dict[str, Any]] = [m for m in self.buffer if m["t"] != "tick"]
        self.buffer.clear()
        async with asyncio.timeout(wait):
            try:
                async for frame in self.ws:
                    msg = decode_server(frame, validate=False)
                    if msg["t"] != "tick":
                        got.append(msg)
            except ConnectionClosed:   # closed with a code other than 1000/1001
                pass
        return got

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    """``await clients(server, binary=True)`` -> Raw; all closed at teardown."""
    opened: list[Raw] = []

    async def make(server: GameServer, *, binary: bool = True, **kwargs: Any) -> Raw:
        client = await Raw.connect(server, binary=binary, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()
