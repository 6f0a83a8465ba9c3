"""Login, tokens, resume, replacement, grace expiry."""

from __future__ import annotations

import asyncio
import time

from gameserver.tokens import TokenSigner

from .conftest import SECRET, Raw


async def test_first_login_creates_character_and_secret_must_match(server, clients):
    a: Raw = await clients(server)
    welcome, _ = await a.login("newbie")
    assert welcome["character"]["level"] == 1 and welcome["character"]["room"] == "town"
    rec = await server.store.get(server.characters.key("newbie"))
    assert rec.bins["secret"].startswith("scrypt$") and SECRET not in str(rec.bins)
    b: Raw = await clients(server)
    reply = await b.request({"t": "login", "name": "newbie", "secret": "not-the-right-secret"})
    assert reply["t"] == "error" and reply["code"] == "auth_failed"
    # the right secret still works (and replaces the first session)
    welcome2, _ = await b.login("newbie")
    assert welcome2["session"] != welcome["session"]


async def test_forged_expired_and_unknown_tokens_are_bad_token(server, clients):
    c: Raw = await clients(server)
    welcome, _ = await c.login("tokenuser")
    token = welcome["token"]
    body, sig = token.split(".")
    forged = body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    sid, now = welcome["session"], time.time()
    other_key = TokenSigner("another-secret-0123456789", 60).issue(sid, "tokenuser", now)
    expired = TokenSigner(server.config.auth.token_secret, -1).issue(sid, "tokenuser", now)
    unknown = server.signer.issue("no-such-session", "tokenuser", time.time())
    r: Raw = await clients(server)
    for bad in (forged, other_key, expired, unknown, "garbage", "a.b.c"):
        reply = await r.request({"t": "resume", "token": bad})
        assert reply["t"] == "error" and reply["code"] == "bad_token", (bad, reply)


async def test_resume_after_dropped_connection_same_session_room_and_place(server, clients):
    a: Raw = await clients(server)
    welcome, _ = await a.login("dropper")
    await a.request({"t": "join", "room": "arena"})
    await asyncio.sleep(0.05)
    await a.send({"t": "move", "x": 110.0, "y": 100.0})
    await a.expect("tick")
    watcher: Raw = await clients(server)
    await watcher.login("watcher2")
    await watcher.request({"t": "join", "room": "arena"})
    a.ws.transport.abort()   # drop, no close handshake
    await asyncio.sleep(0.2)
    assert server.registry.get(welcome["session"]) is not None          # kept during the grace period
    assert len(server.runners["arena"].members) == 2                       # still in the room
    b: Raw = await clients(server)
    w2 = await b.request({"t": "resume", "token": welcome["token"]})
    assert w2["t"] == "welcome" and w2["session"] == welcome["session"] and w2["rid"] == b.rid
    assert w2["character"]["room"] == "arena" and w2["character"]["x"] == 110.0
    joined = await b.expect("joined")
    assert "rid" not in joined and joined["room"] == "arena"
    assert [joined["you"], "dropper", 110.0, 100.0] in joined["players"]
    # the resumed session works and the token keeps working for the next drop
    assert (await b.request({"t": "me"}))["character"]["room"] == "arena"


async def test_resume_while_old_socket_open_takes_over(server, clients):
    a: Raw = await clients(server)
    welcome, _ = await a.login("twin")
    b: Raw = await clients(server)
    w2 = await b.request({"t": "resume", "token": welcome["token"]})
    assert w2["session"] == welcome["session"]
    got = await a.closed()
    assert got[-1] == {"t": "bye", "reason": "replaced"}
    assert (await b.expect("joined"))["room"] == "town"
    assert (await b.request({"t": "ping"}))["t"] == "pong"


async def test_second_login_replaces_first_session(server, clients):
    a: Raw = await clients(server)
    await a.login("single")
    b: Raw = await clients(server)
    await b.login("single")
    got = await a.closed()
    assert got[-1] == {"t": "bye", "reason": "replaced"}
    assert len(server.registry) == 1
    assert len(server.runners["town"].members) == 1


async def test_session_ends_after_grace_and_token_no_longer_resumes(start_server, clients):
    server = await start_server(auth={"grace_seconds": 0.2})
    a: Raw = await clients(server)
    welcome, _ = await a.login("gone")
    await a.close()
    await asyncio.sleep(0.6)
    assert server.registry.get(welcome["session"]) is None
    assert len(server.runners["town"].members) == 0
    b: Raw = await clients(server)
    reply = await b.request({"t": "resume", "token": welcome["token"]})
    assert reply["code"] == "bad_token"
    welcome2, _ = await b.login("gone")      # logging in again works and restores the character
    assert welcome2["character"]["name"] == "gone"
