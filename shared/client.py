"""``GameClient``: the async Python client of the game protocol, for bots, tests and scripts.

One reader task per socket routes every server message: a message carrying a ``rid`` completes the
request that sent it; everything else (``tick``, ``chat``, ``xp``, ``level_up``, ``bye``, errors of
fire-and-forget requests, the ``joined`` after a ``welcome``) goes to a bounded inbox read with
``async for msg in client``. ``client.world`` is kept current from ``joined`` / ``tick`` / ``hit``
before anything reaches the inbox, so it is exact even when the inbox drops ticks.

Errors: an ``error`` reply raises :class:`ServerError`; no reply within ``timeout`` raises
``TimeoutError``; a lost socket fails the requests sent on it with :class:`ConnectionLost`.

Resume without losing a message: the client keeps the last ``seq`` it got (``client.seq``, a
:class:`~shared.seq.SeqTracker`: duplicates are dropped, replayed messages and any gap are counted). When a
socket drops (closed without a close frame from the server, no ``bye``), it resumes by itself with that
``seq`` on a new socket, with jittered backoff (``auto_resume``, ``resume_attempts``): the iterator goes
on with the messages replayed after the ``joined``, then live ones. It ends when the server said ``bye``
or closed the socket, when the resume is refused (``bad_token``) or every attempt failed; ``reconnect()``
resumes explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import messages as m
from .codec import COMPACT, COMPACT_SCALE, decode_server, encode_raw, parse_frame
from .errors import ProtocolError
from .retry import refusal_delay
from .seq import SeqTracker

log = logging.getLogger("shared.client")

DEFAULT_TIMEOUT = 10.0
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_KEEPALIVE = 15.0  # the server's idle timeout defaults to 30 s
DEFAULT_RETRY_REFUSED = 30.0  # seconds login() keeps retrying busy / server_full
MAX_SERVER_FRAME = 16 * 2**20  # a `joined` in a crowded room is big; bounded anyway
MAX_REDIRECT_HOPS = 4  # a resume that is redirected again follows on, up to this many nodes
DEFAULT_RESUME_ATTEMPTS = 6  # after a drop: ~0.1 + 0.2 + ... + 2 s of backoff, well within the grace
RESUME_BACKOFF = 0.1
RESUME_BACKOFF_MAX = 2.0


class ServerError(Exception):
    """The server answered a request with ``error``; ``code`` is an ``ErrorCode`` value, ``retry_after``
    the seconds the server asked to wait (refusals ``busy`` / ``server_full``), else None."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after   # seconds, when the server said when to try again


class Redirected(ServerError):
    """A request was answered with ``redirect`` while ``follow_redirects`` is off."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__("redirect", f"reconnect to {url} and resume")
        self.url = url
        self.token = token


class ConnectionLost(ConnectionError):
    """The socket closed (or the client was closed) before the reply arrived."""


@dataclass
class World:
    """The client's local view of its room, kept current from ``joined``, ``tick`` and ``hit``.

    ``players`` maps id → ``[name, x, y]`` (players in the area of interest, the receiver included);
    ``mobs`` maps id → ``[kind, x, y, hp]``.
    """

    you: int | None = None
    room: str | None = None
    players: dict[int, list[Any]] = field(default_factory=dict)
    mobs: dict[int, list[Any]] = field(default_factory=dict)
    bounds: tuple[float, float] | None = None
    tick: int | None = None  # number of the last tick applied

    @property
    def position(self) -> tuple[float, float] | None:
        """The receiver's own position as the server last reported it."""
        me = self.players.get(self.you) if self.you is not None else None
        return (me[1], me[2]) if me else None

    def apply_joined(self, msg: Any) -> None:
        """A ``joined``: the built-in game's (players, mobs, bounds) or another room type's (``m.Custom``:
        only ``room`` and ``you`` are known here; its own fields stay on the message)."""
        self.you, self.room, self.tick = msg.you, msg.room, None
        if isinstance(msg, m.Joined):
            self.bounds = msg.bounds
            self.players = {pid: [name, x, y] for pid, name, x, y in msg.players}
            self.mobs = {mid: [kind, x, y, hp] for mid, kind, x, y, hp in msg.mobs}
        else:
            self.bounds, self.players, self.mobs = None, {}, {}

    def apply_left(self, msg: m.Left) -> None:
        self.you = self.room = self.bounds = self.tick = None
        self.players, self.mobs = {}, {}

    def apply_tick(self, msg: m.Tick) -> None:
        self.tick = msg.n
        for pid in msg.left:
            self.players.pop(pid, None)
        for pid, name, x, y in msg.joined:
            self.players[pid] = [name, x, y]
        for pid, x, y in msg.moved:
            p = self.players.get(pid)
            if p is not None:
                p[1], p[2] = x, y
        for mid, hp in msg.mobs:
            mob = self.mobs.get(mid)
            if mob is not None:
                mob[3] = hp

    def apply_hit(self, msg: m.Hit) -> None:
        mob = self.mobs.get(msg.mob)
        if mob is not None:
            mob[3] = msg.hp


class _Conn:
    """One socket and its reader; ``stale`` once replaced (its non-reply messages are dropped, and its
    numbered ones too: the resume on the new socket replays them); ``bye`` once the server said it."""

    __slots__ = ("bye", "compact", "reader", "stale", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.reader: asyncio.Task[None] | None = None
        self.stale = False
        self.bye = False
        self.compact = False   # the server confirmed compact ticks on this socket (welcome.tick_format)

    @property
    def dropped(self) -> bool:
        """Ended without the server's close frame (a cut connection, not a close)."""
        return not self.bye and self.ws.protocol.close_rcvd is None


@dataclass(eq=False)
class _Pending:
    fut: asyncio.Future[Any]
    conn: _Conn | None
    t: str  # type of the request
    wants_joined: bool = False  # login/resume: complete on the joined after the welcome
    welcome: m.Welcome | None = None


_EOF = object()  # inbox marker: the connection ended


class _Raw:
    """A message given as a type and fields (``GameClient.request`` / ``send``)."""

    __slots__ = ("fields", "rid", "t")

    def __init__(self, t: str, fields: dict[str, Any]) -> None:
        if not isinstance(t, str) or not t:
            raise ValueError("a message needs a non-empty type")
        self.t = t
        self.fields = fields
        self.rid: int | None = None

    def body(self) -> dict[str, Any]:
        body = {"t": self.t, **self.fields}
        if self.rid is not None:
            body["rid"] = self.rid
        return body


def _expanded(tick: m.Tick) -> m.Tick:
    """A compact tick with its positions back in units."""
    scale = COMPACT_SCALE
    return tick.model_copy(update={
        "moved": [(pid, x / scale, y / scale) for pid, x, y in tick.moved],
        "joined": [(pid, name, x / scale, y / scale) for pid, name, x, y in tick.joined]})


def _decode(frame: bytes | str) -> Any:
    """A protocol model when the frame is one of v1's shapes, else ``m.Custom`` (a room type's own
    message, or its ``joined``). Raises ProtocolError for frames that are not a message at all."""
    try:
        return decode_server(frame)
    except ProtocolError as exc:
        if exc.code not in ("unknown_type", "bad_message"):
            raise
        raw = parse_frame(frame, max_size=None)
    try:
        return m.Custom.model_validate(raw)
    except ValueError:
        raise ProtocolError("bad_message", f"unreadable {raw.get('t')!r:.40} message") from None


class GameClient:
    """Async client of one player connection. Create with :meth:`connect`."""

    def __init__(
        self, url: str, *, binary: bool = True, follow_redirects: bool = True,
        timeout: float = DEFAULT_TIMEOUT, queue_size: int = DEFAULT_QUEUE_SIZE,
        keepalive: float | None = DEFAULT_KEEPALIVE, tick_format: str | None = COMPACT,
        auto_resume: bool = True, resume_attempts: int = DEFAULT_RESUME_ATTEMPTS,
        retry_refused: float = DEFAULT_RETRY_REFUSED,
    ) -> None:
        self.url = url
        self.tick_format = tick_format   # "compact" (the default): a third of the tick bytes; None: v1
        self.auto_resume = auto_resume
        self.resume_attempts = resume_attempts
        self.retry_refused = retry_refused
        self.refusals = 0  # busy / server_full answers login() waited out
        self.seq = SeqTracker()  # last seq, replayed / gaps / duplicates counted
        self.drops = 0  # sockets that dropped under a session
        self.resumes = 0  # resumes after a drop done by the client itself
        self.binary = binary
        self.follow_redirects = follow_redirects
        self.timeout = timeout
        self.queue_size = queue_size
        self.keepalive = keepalive
        self.world = World()
        self.dropped_ticks = 0  # ticks dropped from a full inbox (world was still updated)
        self.redirects = 0
        self._conn: _Conn | None = None
        self._pending: dict[int, _Pending] = {}
        self._rids = itertools.count(1)
        self._awaiting_joined: _Pending | None = None
        self._inbox: deque[Any] = deque()
        self._inbox_event = asyncio.Event()
        self._ready = asyncio.Event()  # set while a usable connection exists
        self._switch = asyncio.Lock()  # held while redirecting / reconnecting
        self._closed = True
        self._user_closed = False
        self._session: str | None = None
        self._token: str | None = None
        self._character: m.Character | None = None
        self._last_send = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keepalive_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls, url: str, *, binary: bool = True, follow_redirects: bool = True,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (a client setting, applied per request)
        queue_size: int = DEFAULT_QUEUE_SIZE, keepalive: float | None = DEFAULT_KEEPALIVE,
        tick_format: str | None = COMPACT, auto_resume: bool = True,
        resume_attempts: int = DEFAULT_RESUME_ATTEMPTS, retry_refused: float = DEFAULT_RETRY_REFUSED,
    ) -> GameClient:
        """Open the websocket (no login yet). ``binary`` picks msgpack frames, else JSON text.
        ``tick_format``: ``"compact"`` asks for ticks with integer positions (expanded back to units
        here, so ticks read the same either way); None keeps protocol v1's ticks. ``auto_resume``: resume
        by itself after a drop (see the module docstring). ``retry_refused``: for how many seconds
        ``login`` waits out ``busy`` / ``server_full`` refusals (0: raise the first as ``ServerError``)."""
        client = cls(url, binary=binary, follow_redirects=follow_redirects, timeout=timeout,
                     queue_size=queue_size, keepalive=keepalive, tick_format=tick_format,
                     auto_resume=auto_resume, resume_attempts=resume_attempts, retry_refused=retry_refused)
        await client._open(url)
        client._ready.set()
        client._start_keepalive()
        return client

    async def reconnect(self) -> m.Welcome:
        """Open a new socket to the same url and resume with the last token and ``seq`` (e.g. after a
        drop): what the session was sent meanwhile follows the ``joined``.

        Returns the new ``welcome`` (same ``session``, ``recovered``); raises :class:`ServerError`
        ``bad_token`` when the session's grace period is over.
        """
        if self._token is None:
            raise RuntimeError("nothing to resume: log in first")
        async with self._switch:
            self._ready.clear()
            self._user_closed = False
            old = self._conn
            if old is not None:
                old.stale = True
                self._spawn(old.ws.close())
            try:
                new = await self._open(self.url)
                welcome, _ = await self._request(self._resume_msg(self._token, self.seq.last),
                                                 wants_joined=True, conn=new)
            except ServerError:
                self._ready.set()  # the new socket stays usable, e.g. for a fresh login
                raise
            except BaseException:
                self._lost()
                raise
            self._ready.set()
            self._start_keepalive()
            return welcome

    async def close(self) -> None:
        """Close the socket; pending requests fail with :class:`ConnectionLost`, the iterator ends."""
        self._user_closed = True
        self._lost()
        conn = self._conn
        if conn is not None:
            await conn.ws.close()
            if conn.reader is not None:
                with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(conn.reader, self.timeout)
        self._fail_pending(None, ConnectionLost("client closed"))
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> GameClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- state --------------------------------------------------------------------------------------
    @property
    def session(self) -> str | None:
        """Session id from the last ``welcome``; unchanged by resume and redirects."""
        return self._session

    @property
    def token(self) -> str | None:
        """Resume token from the last ``welcome``."""
        return self._token

    @property
    def character(self) -> m.Character | None:
        """The character as of ``welcome`` / ``profile``, with xp, level and room updated since."""
        return self._character

    @property
    def closed(self) -> bool:
        """True when no usable connection exists (never connected, lost, or closed)."""
        return self._closed and not self._switch.locked()

    # --- requests -----------------------------------------------------------------------------------
    async def login(self, name: str, secret: str) -> m.Welcome:
        """Log in; returns the ``welcome`` once the ``joined`` that follows it has arrived too.

        A ``busy`` / ``server_full`` refusal is retried on the same socket after ``retry_after`` x 1.0-1.5
        (``shared.retry``) for up to ``retry_refused`` seconds; then the last refusal is raised."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_refused
        attempt = 0
        while True:
            try:
                welcome, _ = await self._request(
                    m.Login(name=name, secret=secret, tick_format=self.tick_format), wants_joined=True)
                return welcome
            except ServerError as exc:
                delay = refusal_delay(exc.code, exc.retry_after, attempt)
                if delay is None or loop.time() + delay > give_up:
                    raise
            attempt += 1
            self.refusals += 1
            log.info("login refused, retrying in %.1f s", delay)
            await asyncio.sleep(delay)

    async def resume(self, token: str, seq: int | None = None) -> m.Welcome:
        """Resume a session on this socket; returns the ``welcome`` once its ``joined`` arrived.
        ``seq``: the last one received of that session (0: none); without it nothing is replayed."""
        welcome, _ = await self._request(self._resume_msg(token, seq), wants_joined=True)
        return welcome

    def _resume_msg(self, token: str, seq: int | None = None) -> m.Resume:
        return m.Resume(token=token, tick_format=self.tick_format, seq=seq)

    async def join(self, room: str) -> m.Joined:
        """Enter ``room``; follows a ``redirect`` to the owning node when ``follow_redirects``."""
        return await self._request(m.Join(room=room))

    async def leave(self) -> m.Left:
        return await self._request(m.Leave())

    async def move(self, x: float, y: float) -> None:
        """Fire and forget: the new position shows in ``tick`` (errors arrive in the iterator)."""
        await self._send(m.Move(x=x, y=y))

    async def chat(self, text: str) -> None:
        """Fire and forget: the line comes back as a ``chat`` in the iterator."""
        await self._send(m.Chat(text=text))

    async def attack(self, mob: int) -> m.Hit:
        return await self._request(m.Attack(mob=mob))

    async def rooms(self, room: str) -> m.RoomList:
        """The instances of ``room`` (``entries``: room, players, max_players)."""
        return await self._request(m.Rooms(room=room))

    async def me(self) -> m.Profile:
        return await self._request(m.Me())

    async def top(self, n: int = 10) -> m.TopEntries:
        return await self._request(m.Top(n=n))

    async def ping(self) -> float:
        """Round trip to the server in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request(m.Ping())
        return loop.time() - start

    async def request(self, t: str, **fields: Any) -> Any:
        """Send a message of any type (a room type's own ones included) and await its reply by ``rid``.

        Returns the reply (a protocol model, or ``m.Custom`` for a room type's message); an ``error``
        reply raises :class:`ServerError`; no reply within ``timeout``: ``TimeoutError``.
        """
        return await self._request(_Raw(t, fields))

    async def send(self, t: str, **fields: Any) -> None:
        """Fire and forget a message of any type (errors and anything it causes arrive in the iterator)."""
        await self._send(_Raw(t, fields))

    # --- inbox --------------------------------------------------------------------------------------
    def __aiter__(self) -> GameClient:
        return self

    async def __anext__(self) -> Any:
        """Next message that is not a direct reply; the iteration ends when the connection ends."""
        while not self._inbox:
            self._inbox_event.clear()
            await self._inbox_event.wait()
        item = self._inbox.popleft()
        if item is _EOF:
            raise StopAsyncIteration
        return item

    async def receive(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Next inbox message; ``TimeoutError`` after ``timeout``, :class:`ConnectionLost` at the end."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except StopAsyncIteration:
            raise ConnectionLost("connection ended") from None

    async def expect(self, t: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Skip inbox messages until one of type ``t``; bounded by ``timeout`` overall."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.receive()
                if msg.t == t:
                    return msg

    # --- internals ----------------------------------------------------------------------------------
    async def _open(self, url: str) -> _Conn:
        ws = await ws_connect(url, compression=None, max_size=MAX_SERVER_FRAME, open_timeout=self.timeout,
                              close_timeout=2)
        conn = _Conn(ws)
        conn.reader = asyncio.create_task(self._read(conn))
        self._conn = conn
        self._closed = False
        if _EOF in self._inbox:  # a new connection: an end seen before it is no longer news
            self._inbox = deque(x for x in self._inbox if x is not _EOF)
        return conn

    async def _live_conn(self) -> _Conn:
        if not self._ready.is_set():
            if self._user_closed or (self._closed and not self._switch.locked()):
                raise ConnectionLost("not connected (closed or lost; see reconnect())")
            await asyncio.wait_for(self._ready.wait(), self.timeout)
        assert self._conn is not None
        return self._conn

    async def _send(self, msg: m.Message | _Raw, conn: _Conn | None = None) -> None:
        conn = conn or await self._live_conn()
        body = msg.body() if isinstance(msg, _Raw) else msg.model_dump(by_alias=True, exclude_none=True)
        try:
            await conn.ws.send(encode_raw(body, self.binary))
        except ConnectionClosed as exc:
            raise ConnectionLost(f"connection closed: {exc}") from None
        self._last_send = asyncio.get_running_loop().time()

    async def _request(self, msg: m.Message | _Raw, *, wants_joined: bool = False,
                       conn: _Conn | None = None) -> Any:
        conn = conn or await self._live_conn()
        rid = next(self._rids)
        msg.rid = rid
        pending = _Pending(asyncio.get_running_loop().create_future(), conn, msg.t, wants_joined)
        self._pending[rid] = pending
        try:
            await self._send(msg, conn)
            return await asyncio.wait_for(pending.fut, self.timeout)
        finally:
            self._pending.pop(rid, None)
            if self._awaiting_joined is pending:
                self._awaiting_joined = None

    async def _read(self, conn: _Conn) -> None:
        try:
            async for frame in conn.ws:
                try:
                    msg = _decode(frame)
                    if isinstance(msg, m.Welcome):   # a server that knows the extension says so here
                        conn.compact = msg.tick_format == COMPACT
                    elif conn.compact and isinstance(msg, m.Tick):
                        msg = _expanded(msg)
                except ProtocolError as exc:
                    self._on_bad_frame(exc)
                    continue
                self._dispatch(conn, msg)
        except ConnectionClosed:
            pass
        except Exception:  # a bug here must not leave requests hanging
            log.exception("client reader failed")
        finally:
            self._conn_ended(conn)

    def _on_bad_frame(self, exc: ProtocolError) -> None:
        log.warning("ignoring server frame: %s", exc)
        pending = self._pending.get(exc.rid) if exc.rid is not None else None
        if pending is not None and not pending.fut.done():
            pending.fut.set_exception(exc)

    def _dispatch(self, conn: _Conn, msg: Any) -> None:
        t = msg.t
        if t == "redirect":
            self._on_redirect(conn, msg)
            return
        seq = getattr(msg, "seq", None)
        if type(seq) is int and (conn.stale or not self.seq.accept(seq)):
            return  # a stale socket's: the resume replays it; a duplicate: counted and dropped
        if t == "bye":
            conn.bye = True
        if msg.rid is not None:
            self._on_reply(msg)
            return
        if conn.stale:  # the old node's broadcasts after a redirect / reconnect are out of date
            return
        if t == "tick" and isinstance(msg, m.Tick):
            self.world.apply_tick(msg)
        elif t == "joined":
            self._on_joined(msg)
            waiting, self._awaiting_joined = self._awaiting_joined, None
            if waiting is not None and not waiting.fut.done():
                waiting.fut.set_result((waiting.welcome, msg))
        elif t == "xp" and self._character is not None and isinstance(msg, m.Xp):
            self._character = self._character.model_copy(update={"xp": msg.xp, "level": msg.level})
        elif t == "welcome" and isinstance(msg, m.Welcome):
            self._on_welcome(msg)
        self._enqueue(msg)

    def _on_reply(self, msg: Any) -> None:
        pending = self._pending.get(msg.rid)
        if pending is None or pending.fut.done():
            log.debug("dropping reply %s for rid %s: nobody waits", msg.t, msg.rid)
            return
        t = msg.t
        if t == "error":
            pending.fut.set_exception(ServerError(msg.code, msg.message, msg.retry_after))
            return
        if t == "welcome":
            self._on_welcome(msg, resumed=pending.t == "resume")
            if pending.wants_joined:
                pending.welcome = msg
                self._awaiting_joined = pending
                return
        elif t == "joined":
            self._on_joined(msg)
        elif t == "left":
            self.world.apply_left(msg)
        elif t == "hit" and isinstance(msg, m.Hit):
            self.world.apply_hit(msg)
        elif t == "profile":
            self._character = msg.character
        pending.fut.set_result(msg)

    def _on_welcome(self, msg: m.Welcome, resumed: bool = False) -> None:
        if msg.session != self._session:
            self.seq.reset()
        if msg.recovered is not None or resumed:   # a resume without seq (or a server without the
            self.seq.resumed(msg.recovered, msg.replay or 0)   # extension): numbering may go on anywhere
        self._session, self._token, self._character = msg.session, msg.token, msg.character

    def _on_joined(self, msg: Any) -> None:
        self.world.apply_joined(msg)
        if self._character is not None:
            self._character = self._character.model_copy(update={"room": msg.room})

    def _on_redirect(self, conn: _Conn, msg: m.Redirect) -> None:
        pending = self._pending.get(msg.rid) if msg.rid is not None else None
        if conn.stale or conn is not self._conn:
            return
        if not self.follow_redirects:
            if pending is not None and not pending.fut.done():
                pending.fut.set_exception(Redirected(msg.url, msg.token))
            else:
                self._enqueue(msg)
            return
        if pending is not None and pending.t == "resume" and self._switch.locked():
            # The node we were sent to redirects again (it lost the room meanwhile): the redirect in
            # progress follows the next hop itself, inside the lock it holds.
            conn.stale = True
            pending.fut.set_exception(Redirected(msg.url, msg.token))
            return
        conn.stale = True
        if pending is not None:
            pending.conn = None  # it completes on the new node, not when this socket ends
        self._ready.clear()
        self._spawn(self._follow_redirect(conn, msg, pending))

    async def _follow_redirect(self, old: _Conn, msg: m.Redirect, pending: _Pending | None) -> None:
        """Reconnect to the node named by ``redirect`` and resume there, keeping the session."""
        async with self._switch:
            self.redirects += 1
            try:
                url, token = msg.url, msg.token
                if pending is not None and pending.t == "login":
                    self.seq.reset()  # the new session's first message will be 1
                for _hop in range(MAX_REDIRECT_HOPS):
                    self.url = url
                    new = await self._open(url)
                    try:
                        welcome, joined = await self._request(self._resume_msg(token, self.seq.last),
                                                              wants_joined=True, conn=new)
                        break
                    except Redirected as again:
                        self._spawn(new.ws.close())
                        url, token = again.url, again.token
                        self.redirects += 1
                else:
                    raise ConnectionLost(f"more than {MAX_REDIRECT_HOPS} redirects in a row")
            except Exception as exc:
                log.warning("redirect to %s failed: %s", msg.url, exc)
                if pending is not None and not pending.fut.done():
                    err = exc if isinstance(exc, ServerError) else ConnectionLost(f"redirect failed: {exc}")
                    pending.fut.set_exception(err)
                self._lost()
                if self._conn is not None and self._conn is not old:
                    await self._conn.ws.close()
                return
            finally:
                self._spawn(old.ws.close())
            self._ready.set()
        if pending is None or pending.fut.done():
            return
        if pending.wants_joined:
            pending.fut.set_result((welcome, joined))
        elif pending.t == "join":
            pending.fut.set_result(joined)
        else:
            pending.fut.set_exception(Redirected(msg.url, msg.token))

    def _conn_ended(self, conn: _Conn) -> None:
        self._fail_pending(conn, ConnectionLost("connection closed before the reply"))
        if conn is self._conn and not conn.stale:
            if (self.auto_resume and conn.dropped and self._token is not None and not self._user_closed
                    and not self._switch.locked() and self.resume_attempts > 0):
                self.drops += 1
                self._ready.clear()
                self._spawn(self._auto_resume(conn))
                return
            self._lost()

    async def _auto_resume(self, old: _Conn) -> None:
        """The socket dropped: resume on a new one with the last seq, retrying with jittered backoff;
        the iterator ends only when that fails for good."""
        async with self._switch:
            old.stale = True
            delay = RESUME_BACKOFF
            for attempt in range(self.resume_attempts):
                if self._user_closed:
                    return
                if attempt:
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, RESUME_BACKOFF_MAX)
                new: _Conn | None = None
                try:
                    url, token = self.url, self._token
                    assert token is not None
                    for _hop in range(MAX_REDIRECT_HOPS):
                        new = await self._open(url)
                        try:
                            await self._request(self._resume_msg(token, self.seq.last), wants_joined=True,
                                                conn=new)
                            break
                        except Redirected as again:  # the room lives on another node: resume there
                            new.stale = True
                            self._spawn(new.ws.close())
                            url, token = again.url, again.token
                            self.url = url
                            self.redirects += 1
                    else:
                        raise ConnectionLost(f"more than {MAX_REDIRECT_HOPS} redirects in a row")
                except ServerError as exc:  # bad_token: the grace period is over
                    log.info("resume after a drop refused: %s", exc)
                    break
                except (OSError, ConnectionError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                    log.debug("resume attempt %d failed: %r", attempt + 1, exc)
                    if new is not None:
                        new.stale = True
                        self._spawn(new.ws.close())
                    continue
                self.resumes += 1
                self._ready.set()
                self._start_keepalive()
                return
            if new is not None:
                new.stale = True
                self._spawn(new.ws.close())
            self._lost()

    def _lost(self) -> None:
        """The current connection is unusable: mark closed and end the iterator."""
        self._closed = True
        self._ready.clear()
        if not self._inbox or self._inbox[-1] is not _EOF:
            self._inbox.append(_EOF)
        self._inbox_event.set()

    def _fail_pending(self, conn: _Conn | None, exc: Exception) -> None:
        for pending in list(self._pending.values()):
            if (conn is None or pending.conn is conn) and not pending.fut.done():
                pending.fut.set_exception(exc)

    def _enqueue(self, msg: Any) -> None:
        """Append to the inbox; when full, drop the oldest tick (never another type)."""
        if len(self._inbox) >= self.queue_size:
            for i, item in enumerate(self._inbox):
                if item is not _EOF and item.t == "tick":
                    del self._inbox[i]
                    self.dropped_ticks += 1
                    break
            else:
                if msg.t == "tick":
                    self.dropped_ticks += 1
                    return
                # only reliable messages queued: keep them all (the server bounds their rate)
        self._inbox.append(msg)
        self._inbox_event.set()

    def _start_keepalive(self) -> None:
        if self.keepalive and (self._keepalive_task is None or self._keepalive_task.done()):
            self._keepalive_task = asyncio.create_task(self._keepalive_loop())
            self._tasks.add(self._keepalive_task)
            self._keepalive_task.add_done_callback(self._tasks.discard)

    async def _keepalive_loop(self) -> None:
        """Send ``ping`` when nothing was sent for ``keepalive`` seconds (the server drops idle sockets).

        Ends when the connection is lost or closed; ``reconnect()`` starts it again."""
        loop = asyncio.get_running_loop()
        assert self.keepalive
        while not self._closed or self._switch.locked():
            await asyncio.sleep(self.keepalive / 3)
            if self._ready.is_set() and loop.time() - self._last_send >= self.keepalive:
                with contextlib.suppress(Exception):
                    await self.ping()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
