"""GameClient against a tiny fake game server (real websockets on loopback, no game logic)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from shared import messages as m
from shared.client import ConnectionLost, GameClient, Redirected, ServerError
from shared.codec import decode_client, encode

pytestmark = pytest.mark.timeout(30)
SECRET = "s" * 16


class FakeServer:
    """Answers like the real server would, with a few test hooks.

    attack mob 99 → error out_of_range; attack mob 666 → no answer, socket closed; attack mob 667 → the
    TCP connection is cut (no close frame: a drop); chat echoes carry ``seq``; top n=42 → never
    answered; join "far" on a node with ``redirect_to`` → redirect (once per connection); me is answered
    after a short delay (so replies come out of order).
    """

    def __init__(self) -> None:
        self.server: Server | None = None
        self.url = ""
        self.redirect_to: FakeServer | None = None
        self.resume_redirect_to: FakeServer | None = None   # a resume here is redirected on (chained)
        self.sessions: dict[str, tuple[str, str]] = {}  # token → (session, room)
        self.connections: list[ServerConnection] = []
        self.received: list[m.Message] = []
        self.tick = 0
        self.seq = 0

    async def start(self) -> None:
        self.server = await serve(self.handler, "127.0.0.1", 0, compression=None)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def issue_token(self, session: str, room: str) -> str:
        token = f"tok-{session}-{len(self.sessions)}"
        self.sessions[token] = (session, room)
        return token

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        name, room, binary = "nobody", "town", True

        async def send(model: m.Message) -> None:
            await ws.send(encode(model, binary))

        async def enter(rid: int | None, session: str, room: str) -> None:
            character = m.Character(name=name, level=1, xp=0, room=room, x=10, y=20)
            token = self.issue_token(session, room)
            await send(m.Welcome(rid=rid, session=session, token=token, character=character, tick_rate=20))
            await send(joined(None, room))

        def joined(rid: int | None, room: str) -> m.Joined:
            return m.Joined(rid=rid, room=room, you=1, players=[(1, name, 10, 20), (2, "other", 50, 50)],
                            mobs=[(7, "wolf", 30, 30, 100)], bounds=(1000, 1000))

        async for frame in ws:
            binary = isinstance(frame, bytes)
            msg = decode_client(frame)
            self.received.append(msg)
            match msg:
                case m.Login():
                    name = msg.name
                    await enter(msg.rid, f"sess-{msg.name}", room)
                case m.Resume() if self.resume_redirect_to is not None and msg.token in self.sessions:
                    session, room = self.sessions[msg.token]
                    token = self.resume_redirect_to.issue_token(session, room)
                    await send(m.Redirect(rid=msg.rid, url=self.resume_redirect_to.url, token=token))
                case m.Resume():
                    if msg.token not in self.sessions:
                        await send(m.Error(rid=msg.rid, code="bad_token", message="unknown token"))
                        continue
                    session, room = self.sessions[msg.token]
                    name = session.removeprefix("sess-")
                    await enter(msg.rid, session, room)
                case m.Join(room="far") if self.redirect_to is not None:
                    token = self.redirect_to.issue_token(f"sess-{name}", "far")
                    await send(m.Redirect(rid=msg.rid, url=self.redirect_to.url, token=token))
                case m.Join():
                    room = msg.room
                    await send(joined(msg.rid, room))
                case m.Leave():
                    await send(m.Left(rid=msg.rid, room=room))
                case m.Move():
                    self.tick += 1
                    await send(m.Tick(n=self.tick, ts=1.0, moved=[(1, msg.x, msg.y)], left=[2],
                                      joined=[(3, "newbie", 5, 5)], mobs=[(7, 60)]))
                case m.Chat():
                    self.seq += 1
                    await send(m.ChatMessage(from_=name, text=msg.text, ts=2.0, seq=self.seq))
                case m.Attack(mob=99):
                    await send(m.Error(rid=msg.rid, code="out_of_range", message="too far"))
                case m.Attack(mob=666):
                    await ws.close()
                case m.Attack(mob=667):
                    ws.transport.abort()
                    return
                case m.Attack():
                    await send(m.Hit(rid=msg.rid, mob=msg.mob, dmg=15, hp=85))
                case m.Me():
                    await asyncio.sleep(0.05)
                    character = m.Character(name=name, level=1, xp=0, room=room, x=10, y=20)
                    await send(m.Profile(rid=msg.rid, character=character, kills=0))
                case m.Top(n=42):
                    pass
                case m.Top():
                    await send(m.TopEntries(rid=msg.rid, entries=[m.TopEntry(name=name, level=1, xp=0)]))
                case m.Ping():
                    await send(m.Pong(rid=msg.rid, ts=3.0))


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    srv = FakeServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def far_node() -> AsyncIterator[FakeServer]:
    srv = FakeServer()
    await srv.start()
    yield srv
    await srv.stop()


async def logged_in(server: FakeServer, **kw) -> GameClient:
    client = await GameClient.connect(server.url, timeout=2.0, keepalive=None, **kw)
    await client.login("alice", SECRET)
    return client


@pytest.mark.parametrize("binary", [True, False])
async def test_login_waits_for_joined_and_fills_state(server: FakeServer, binary: bool) -> None:
    client = await logged_in(server, binary=binary)
    try:
        assert client.session == "sess-alice" and client.token is not None and not client.closed
        assert client.character is not None and client.character.name == "alice"
        assert client.world.you == 1 and client.world.room == "town" and client.world.bounds == (1000, 1000)
        assert client.world.players == {1: ["alice", 10, 20], 2: ["other", 50, 50]}
        assert client.world.mobs == {7: ["wolf", 30, 30, 100]}
        first = await client.receive(timeout=1)  # the joined after welcome goes to the iterator too
        assert isinstance(first, m.Joined) and first.rid is None
        assert server.received[0].rid == 1
    finally:
        await client.close()


async def test_concurrent_requests_are_matched_by_rid(server: FakeServer) -> None:
    client = await logged_in(server)
    try:
        replies = await asyncio.gather(client.me(), client.ping(), client.top(5), client.attack(7))
        profile, rtt, top, hit = replies
        assert isinstance(profile, m.Profile) and isinstance(top, m.TopEntries) and isinstance(hit, m.Hit)
        assert 0 <= rtt < 2
        rids = [msg.rid for msg in server.received]
        assert len(set(rids)) == len(rids) and all(isinstance(r, int) for r in rids)
        assert client.world.mobs[7][3] == 85  # hit updates the mob's hp
    finally:
        await client.close()


async def test_error_reply_raises_server_error(server: FakeServer) -> None:
    client = await logged_in(server)
    try:
        with pytest.raises(ServerError) as info:
            await client.attack(99)
        assert info.value.code == "out_of_range" and info.value.message == "too far"
        assert isinstance(await client.ping(), float)  # the connection is still fine
    finally:
        await client.close()


async def test_iterator_yields_non_replies_and_world_follows_ticks(server: FakeServer) -> None:
    client = await logged_in(server)
    try:
        await client.move(100.5, 200.0)
        await client.chat("hello")
        await client.ping()
        seen = [await client.receive(timeout=1) for _ in range(3)]
        assert [msg.t for msg in seen] == ["joined", "tick", "chat"]
        assert seen[2].from_ == "alice" and seen[2].text == "hello"
        assert client.world.position == (100.5, 200.0)
        assert 2 not in client.world.players and client.world.players[3] == ["newbie", 5, 5]
        assert client.world.mobs[7][3] == 60 and client.world.tick == 1
        assert server.received[-3].rid is None  # fire-and-forget requests carry no rid
    finally:
        await client.close()


async def test_join_leave_update_world(server: FakeServer) -> None:
    client = await logged_in(server)
    try:
        joined = await client.join("forest")
        assert joined.room == "forest" and client.world.room == "forest" and client.character.room == "forest"
        left = await client.leave()
        assert left.room == "forest" and client.world.room is None and client.world.players == {}
    finally:
        await client.close()


async def test_request_without_reply_times_out(server: FakeServer) -> None:
    client = await logged_in(server)
    client.timeout = 0.2
    try:
        with pytest.raises(TimeoutError):
            await client.top(42)
        assert isinstance(await client.ping(), float)
    finally:
        await client.close()


async def test_connection_loss_fails_pending_and_ends_iterator(server: FakeServer) -> None:
    client = await logged_in(server)
    pending = asyncio.create_task(client.top(42))  # never answered
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionLost):
        await client.attack(666)
    with pytest.raises(ConnectionLost):
        await pending
    messages = [msg async for msg in client]
    assert [msg.t for msg in messages] == ["joined"]
    assert client.closed
    with pytest.raises(ConnectionLost):
        await client.ping()
    await client.close()


async def test_reconnect_resumes_the_same_session(server: FakeServer) -> None:
    client = await logged_in(server)
    session, token = client.session, client.token
    with pytest.raises(ConnectionLost):
        await client.attack(666)
    welcome = await client.reconnect()
    try:
        assert welcome.session == session == client.session and client.token != token
        assert not client.closed and isinstance(await client.ping(), float)
        assert isinstance(server.received[-2], m.Resume) and server.received[-2].token == token
        assert client.world.room == "town"
    finally:
        await client.close()


async def test_reconnect_with_an_unknown_token_raises_bad_token(server: FakeServer) -> None:
    client = await logged_in(server)
    server.sessions.clear()
    try:
        with pytest.raises(ServerError) as info:
            await client.reconnect()
        assert info.value.code == "bad_token"
        await client.login("alice", SECRET)  # the new socket is usable for a fresh login
    finally:
        await client.close()


async def test_redirect_is_followed_keeping_the_session(server: FakeServer, far_node: FakeServer) -> None:
    server.redirect_to = far_node
    client = await logged_in(server)
    try:
        joined = await client.join("far")
        assert joined.room == "far" and client.world.room == "far"
        assert client.session == "sess-alice" and client.url == far_node.url and client.redirects == 1
        assert isinstance(far_node.received[0], m.Resume)
        assert isinstance(await client.ping(), float)
        assert isinstance(far_node.received[-1], m.Ping)  # later requests go to the new node
        assert not client.closed
    finally:
        await client.close()


async def test_chained_redirect_is_followed_to_the_last_node(
    server: FakeServer, far_node: FakeServer
) -> None:
    final = FakeServer()
    await final.start()
    server.redirect_to = far_node
    far_node.resume_redirect_to = final        # far_node lost the room meanwhile: it sends us on
    client = await logged_in(server)
    try:
        joined = await asyncio.wait_for(client.join("far"), 5)
        assert joined.room == "far" and client.url == final.url and client.redirects == 2
        assert client.session == "sess-alice"
        assert isinstance(await client.ping(), float) and isinstance(final.received[-1], m.Ping)
    finally:
        await client.close()
        await final.stop()


async def test_redirect_not_followed_raises_redirected(server: FakeServer, far_node: FakeServer) -> None:
    server.redirect_to = far_node
    client = await logged_in(server, follow_redirects=False)
    try:
        with pytest.raises(Redirected) as info:
            await client.join("far")
        assert info.value.url == far_node.url and info.value.token.startswith("tok-")
        assert client.url == server.url and far_node.received == []
    finally:
        await client.close()


async def test_inbox_is_bounded_and_drops_only_old_ticks(server: FakeServer) -> None:
    client = await logged_in(server, queue_size=5)
    try:
        for i in range(20):
            await client.move(float(i), 0.0)
        await client.chat("kept")
        await client.ping()  # all of the above has been read once the pong is in
        kept = [await client.receive(timeout=1) for _ in range(5)]
        assert kept[0].t == "joined" and kept[-1].t == "chat"
        assert [msg.n for msg in kept[1:4]] == [18, 19, 20]  # the newest ticks survive
        assert client.dropped_ticks == 17
        assert client.world.position == (19.0, 0.0)  # the world saw every tick anyway
    finally:
        await client.close()


async def test_close_fails_pending_requests_and_ends_iteration(server: FakeServer) -> None:
    client = await logged_in(server)
    pending = asyncio.create_task(client.top(42))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ConnectionLost):
        await pending
    assert client.closed and [msg.t async for msg in client] == ["joined"]


async def test_keepalive_pings_when_idle(server: FakeServer) -> None:
    client = await GameClient.connect(server.url, keepalive=0.1, timeout=2.0)
    try:
        await asyncio.sleep(0.4)
        assert any(isinstance(msg, m.Ping) for msg in server.received)
    finally:
        await client.close()


async def test_a_dropped_socket_is_resumed_by_the_client_with_its_last_seq(server: FakeServer) -> None:
    client = await logged_in(server)
    try:
        await client.chat("one")
        assert (await client.expect("chat", timeout=2)).seq == 1
        with pytest.raises(ConnectionLost):
            await client.attack(667)
        assert isinstance(await client.ping(), float)          # waits for the resume, then works
        resume = [msg for msg in server.received if isinstance(msg, m.Resume)]
        assert len(resume) == 1 and resume[0].seq == 1
        assert client.drops == 1 and client.resumes == 1 and not client.closed
        await client.chat("two")                                 # the iterator goes on across the drop
        assert (await client.expect("chat", timeout=2)).text == "two"
        assert client.seq.last == 2 and client.seq.failures == 0
    finally:
        await client.close()


async def test_a_drop_whose_resume_is_refused_ends_the_iterator(server: FakeServer) -> None:
    client = await logged_in(server)
    server.sessions.clear()                                    # every token unknown: bad_token
    with pytest.raises(ConnectionLost):
        await client.attack(667)
    messages = [msg async for msg in client]
    assert [msg.t for msg in messages] == ["joined"]
    assert client.closed and client.drops == 1 and client.resumes == 0
    await client.close()


async def test_without_auto_resume_a_drop_ends_the_iterator(server: FakeServer) -> None:
    client = await logged_in(server, auto_resume=False)
    with pytest.raises(ConnectionLost):
        await client.attack(667)
    assert [msg.t async for msg in client] == ["joined"]
    assert client.closed and client.drops == 0
    await client.close()


async def test_resuming_a_session_this_client_never_saw_counts_no_gap(server: FakeServer) -> None:
    first = await logged_in(server)
    await first.chat("numbered")
    assert (await first.expect("chat", timeout=2)).seq == 1
    token = first.token
    await first.close()
    other = await GameClient.connect(server.url, timeout=2.0, keepalive=None)
    try:
        await other.resume(token)                    # v1 resume: its numbers go on from the server's
        await other.chat("next")
        assert (await other.expect("chat", timeout=2)).seq == 2
        assert other.seq.failures == 0 and other.seq.last == 2
    finally:
        await other.close()
