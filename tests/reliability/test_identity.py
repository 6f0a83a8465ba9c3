"""Forged, expired and replayed tokens, and attempts to act as another player's character, are rejected.

In-process server with a real file store; clients are ``GameClient``s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gameserver.app import GameServer
from gameserver.tokens import TokenSigner
from shared.client import GameClient, ServerError
from tests.support import SECRET, server_config

OTHER_SECRET = "another-secret-of-player-b"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GameServer]:
    config = server_config(tmp_path / "data", auth={"grace_seconds": 0.5, "token_ttl": 1.5})
    srv = GameServer(config)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def connect(server: GameServer) -> AsyncIterator[Any]:
    opened: list[GameClient] = []

    async def make() -> GameClient:
        c = await GameClient.connect(f"ws://127.0.0.1:{server.port}/ws", timeout=5.0)
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.close()


async def _resume_code(client: GameClient, token: str) -> str:
    with pytest.raises(ServerError) as info:
        await client.resume(token)
    return info.value.code


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_forged_tokens_are_rejected(server: GameServer, connect: Any) -> None:
    a = await connect()
    await a.login("alice", SECRET)
    token = a.token
    assert token is not None
    body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = {
        "flipped signature": f"{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}",
        "claims renamed to bob": _b64(json.dumps({**claims, "c": "bob"}).encode()) + "." + sig,
        "expiry pushed out": _b64(json.dumps({**claims, "e": claims["e"] + 1e6}).encode()) + "." + sig,
        "signed with another key": TokenSigner("not-the-server-key-0123456789", 60).issue(
            claims["s"], "alice", time.time()),
        "garbage": "not.a.token",
        "empty signature": f"{body}.",
    }
    codes = {}
    for what, bad in forged.items():
        codes[what] = await _resume_code(await connect(), bad)
    print("\nforged tokens:", codes)
    assert set(codes.values()) == {"bad_token"}
    assert (await a.me()).character.name == "alice"   # the real session is untouched


async def test_expired_replaced_and_ended_session_tokens_are_rejected(
        server: GameServer, connect: Any) -> None:
    a1 = await connect()
    await a1.login("carol", SECRET)
    replaced_token = a1.token
    a2 = await connect()
    await a2.login("carol", SECRET)                   # a1's session is replaced (bye replaced)
    assert await _resume_code(await connect(), replaced_token) == "bad_token"
    ended = await connect()
    await ended.login("dave", SECRET)
    ended_token = ended.token
    await ended.close()
    await asyncio.sleep(1.0)                          # grace (0.5 s) over: the session ended
    assert await _resume_code(await connect(), ended_token) == "bad_token"
    live = a2.token
    await asyncio.sleep(1.6)                          # token_ttl 1.5 s: the live session's token expired
    assert await _resume_code(await connect(), live) == "bad_token"
    assert (await a2.me()).character.name == "carol"  # expiry of the token does not end the session


async def test_acting_on_another_players_character_is_rejected(server: GameServer, connect: Any) -> None:
    a = await connect()
    await a.login("erin", SECRET)
    b = await connect()
    await b.login("frank", OTHER_SECRET)
    # login as erin with frank's secret
    with pytest.raises(ServerError) as info:
        await (await connect()).login("erin", OTHER_SECRET)
    assert info.value.code == "auth_failed"
    # frank's socket logging in as erin with the wrong secret changes nothing for either of them
    with pytest.raises(ServerError) as info:
        await b.login("erin", OTHER_SECRET)
    assert info.value.code == "auth_failed"
    assert (await b.me()).character.name == "frank"
    # frank's token with the claims edited to erin (signature no longer matches)
    body, sig = b.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    stolen = _b64(json.dumps({**claims, "c": "erin"}).encode()) + "." + sig
    assert await _resume_code(b, stolen) == "bad_token"
    # erin's session id inside a token signed for frank's name: the registry refuses the mismatch
    signer = server.signer
    mixed = signer.issue(a.session or "", "frank", time.time())   # valid signature, unexpired
    assert await _resume_code(await connect(), mixed) == "bad_token"
    assert (await a.me()).character.name == "erin"
    assert (await b.me()).character.name == "frank"
