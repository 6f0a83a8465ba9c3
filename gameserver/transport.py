"""The only module that imports ``websockets``: accept, HTTP routes, read loop, write path.

- ``/ws`` upgrades to a websocket (no permessage-deflate; hard frame cap ``limits.hard_max_bytes``, over
  which websockets closes with 1009); ``/health`` and ``/metrics`` answer over plain HTTP through the
  ``process_request`` hook; the ``pages`` callable (``gameserver.webui.WebUI``) answers the web client
  and ``/api/stats``; every other path is 404.
- Writes never await: frames are serialised once (``gameserver.wsframe``) and ``WsSink.send_wire`` writes
  the same bytes to each open connection's transport now, skipping websockets' per-connection
  re-serialisation (measured: the tick's main cost); a room runner writes a receiver's tick and chat
  frames in one call. Backpressure is read from
  the transport's write buffer size; ``drain`` waits for websockets' flow control (``write_limit`` marks).
- The read loop enforces the idle timeout (``bye idle``) and hands each frame to the router.
- Abuse limits: a ``/ws`` upgrade beyond ``limits.max_connections`` open websockets is refused with HTTP 503
  (a concurrent burst may overshoot by the handshakes in flight); a connection that has not finished its
  handshake within ``limits.open_timeout`` seconds is aborted (slowloris).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .logs import event
from .session import Link
from .wsdirect import DirectConnection
from .wsframe import server_frame

if TYPE_CHECKING:
    from .config import LimitsConfig
    from .metrics import Metrics

HttpAnswer = tuple[int, str, bytes]

log = logging.getLogger("gameserver.transport")


READ_QUEUE = 64   # messages read ahead of their handling: websockets' max_queue, and the direct backlog


class WsSink:
    """A websocket connection as seen by a ``Link``."""

    __slots__ = ("_closing", "conn")

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self._closing: asyncio.Task[None] | None = None

    def send(self, frame: bytes | str) -> None:
        self.send_wire(server_frame(frame))

    def send_wire(self, wire: bytes) -> None:
        """Write serialised frames (``gameserver.wsframe``) if the connection takes whole messages now.

        The same checks as websockets' ``broadcast``: open, and not in the middle of a fragmented send.
        """
        conn = self.conn
        if conn.protocol.state is not State.OPEN or conn.send_in_progress is not None:
            return
        try:
            conn.transport.write(wire)
        except (OSError, RuntimeError) as exc:   # transport closing under us: the read loop cleans up
            event(log, "write_failed", level=logging.DEBUG, error=str(exc))

    def backed_up(self) -> bool:
        """The transport paused writing: its buffer went over ``write_buffer_high`` (the serve call's
        ``write_limit``), and stays paused until it drains under a quarter of that (``drain`` returns)."""
        return self.conn.paused

    def write_now(self, wire: bytes) -> bool:
        """``send_wire`` unless ``backed_up`` (False: nothing written); one call for the tick's hot loop."""
        if self.conn.paused:
            return False
        self.send_wire(wire)
        return True

    async def drain(self) -> None:
        if self.conn.state is not State.OPEN:
            raise ConnectionError("connection closed")
        await self.conn.drain()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None and self.conn.state is State.OPEN:
            self._closing = asyncio.get_running_loop().create_task(self.conn.close(code, reason))

    @property
    def is_open(self) -> bool:
        return self.conn.state is State.OPEN

    async def wait_closing(self) -> None:
        """Let a close started by ``close`` finish (so its code, not the handler's default, is used)."""
        if self._closing is not None:
            await asyncio.wait([self._closing])


class _DirectReader:
    """Frames of one direct connection, in order: handled at once unless a session-layer message (login,
    resume, ...) is still being awaited, then queued behind it (reading paused past ``MAX_BACKLOG``)."""

    MAX_BACKLOG = READ_QUEUE

    __slots__ = ("backlog", "conn", "link", "paused", "receive", "task")

    def __init__(self, link: Link, receive: Callable[[Link, bytes | str], Awaitable[None] | None],
                 conn: DirectConnection) -> None:
        self.link = link
        self.receive = receive
        self.conn = conn
        self.backlog: deque[bytes] | None = None
        self.task: asyncio.Task[None] | None = None
        self.paused = False

    def frame(self, data: bytes) -> None:
        link = self.link
        if link.closing:
            return
        link.last_frame = time.monotonic()
        backlog = self.backlog
        if backlog is not None:
            backlog.append(data)
            if len(backlog) >= self.MAX_BACKLOG and not self.paused:
                self.paused = True
                self.conn.transport.pause_reading()
            return
        try:
            pending = self.receive(link, data)
        except Exception:   # receive never raises; if it did, the parser's callback must not break
            event(log, "connection_failed", level=logging.ERROR, exc_info=True)
            link.abort("internal", 1011)
            return
        if pending is not None:
            self.backlog = deque()
            self.task = asyncio.get_running_loop().create_task(self._drain(pending))

    async def _drain(self, pending: Awaitable[None]) -> None:
        try:
            await pending
            backlog = self.backlog
            while backlog:
                data = backlog.popleft()
                if self.link.closing:
                    break
                more = self.receive(self.link, data)
                if more is not None:
                    await more
        except Exception:
            event(log, "connection_failed", level=logging.ERROR, exc_info=True)
            self.link.abort("internal", 1011)
        finally:
            self.backlog = None
            if self.paused:
                self.paused = False
                with contextlib.suppress(Exception):
                    self.conn.transport.resume_reading()

    async def finish(self) -> None:
        """Wait until every frame received so far was handled."""
        if self.task is not None:
            await asyncio.wait([self.task])


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers([
        ("Content-Length", str(len(body))), ("Content-Type", content_type), ("Connection", "close"),
        ("Cache-Control", "no-store"),
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class Transport:
    """Owns the listening socket and the connections; everything else comes in as callables:
    ``receive(link, frame)`` for each frame (it returns an awaitable only when it must wait),
    ``closed(link)`` once per connection, ``health()`` for ``/health`` and ``pages(path, headers)`` for
    the other HTTP routes (None: 404)."""

    def __init__(self, limits: LimitsConfig, metrics: Metrics, *,
                 receive: Callable[[Link, bytes | str], Awaitable[None] | None],
                 closed: Callable[[Link], Awaitable[None]],
                 health: Callable[[], dict[str, Any]],
                 pages: Callable[[str, Mapping[str, str]], HttpAnswer | None]) -> None:
        self.limits = limits
        self.metrics = metrics
        self.receive = receive
        self.closed = closed
        self.health = health
        self.pages = pages
        self.ws: Server | None = None
        self.links: set[Link] = set()
        self._idle_sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        limits = self.limits
        self._idle_sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())
        self.ws = await serve(
            self._handle, host, port,
            process_request=self._process_request,
            compression=None,
            max_size=limits.hard_max_bytes,
            max_queue=READ_QUEUE,
            write_limit=(limits.write_buffer_high, limits.write_buffer_high // 4),
            close_timeout=limits.close_timeout,
            open_timeout=limits.open_timeout,
            # No websockets keepalive task per connection: the protocol's own idle timeout (``bye idle``
            # after ``limits.idle_timeout`` without a frame; clients ping when idle) finds dead peers.
            ping_interval=None, ping_timeout=None,
            server_header="gameserver",
            backlog=limits.listen_backlog,
            create_connection=DirectConnection,
        )
        return int(self.ws.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self.ws is not None:
            self.ws.close(close_connections=False)
        if self._idle_sweeper is not None:
            self._idle_sweeper.cancel()

    async def _sweep_idle(self) -> None:
        """``bye idle`` to every link without a frame for ``limits.idle_timeout`` seconds.

        One timer for all connections, a few times per timeout, instead of a timeout armed around every
        ``recv`` (measured: ~2% of a busy server's time); a link is closed at most a quarter of the timeout
        late."""
        idle = self.limits.idle_timeout
        step = min(1.0, idle / 4)
        while True:
            await asyncio.sleep(step)
            limit = time.monotonic() - idle
            for link in list(self.links):
                if link.last_frame < limit and not link.closing:
                    link.bye("idle")

    async def wait_closed(self, limit: float) -> None:
        """Wait for every connection to close; abort the stragglers after ``limit``."""
        if self.ws is None:
            return
        try:
            async with asyncio.timeout(limit):
                await self.ws.wait_closed()
        except TimeoutError:
            for conn in list(self.ws.connections):
                conn.transport.abort()
            try:
                async with asyncio.timeout(1.0):
                    await self.ws.wait_closed()
            except TimeoutError:
                event(log, "close_timeout", level=logging.WARNING)

    # -- HTTP ----------------------------------------------------------------------------------------
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            if self.ws is not None and len(self.ws.all_connections) >= self.limits.max_connections:
                # over capacity: refuse the upgrade cheaply; /health and /metrics still answer
                self.metrics.disconnects.labels("max_connections").inc()
                return _response(503, b"server full, retry later\n", "text/plain; charset=utf-8")
            return None
        if path == "/health":
            # 503 until start-up has finished (rooms claimed) and once stopping: a readiness probe.
            health = self.health()
            body = json.dumps(health, separators=(",", ":")).encode()
            return _response(200 if health["status"] == "ok" else 503, body, "application/json")
        if path == "/metrics":
            from .metrics import CONTENT_TYPE_LATEST
            return _response(200, self.metrics.render(), CONTENT_TYPE_LATEST)
        answer = self.pages(request.path, request.headers)   # web client, monitor, /api/stats
        if answer is not None:
            status, content_type, body = answer
            return _response(status, body, content_type)
        return _response(404, b"not found\n", "text/plain; charset=utf-8")

    # -- websocket -----------------------------------------------------------------------------------
    async def _read(self, conn: DirectConnection, link: Link) -> None:
        """Hand ``link``'s frames to ``receive`` in order until the connection or the link closes.

        Binary single-frame messages go straight from the parser (``gameserver.wsdirect``); this task only
        sleeps until the connection closes, the link closes, or the connection fell back to websockets'
        queue (a text frame, a fragment), which is then read with ``recv``.
        """
        receive = self.receive
        clock = time.monotonic
        loop = asyncio.get_running_loop()
        while not link.closing:
            if not conn.fell_back and conn.queued() == 0:
                reader = _DirectReader(link, receive, conn)
                wake = conn.wake = loop.create_future()
                link.on_closing = conn.wake_up
                conn.direct = reader.frame
                try:
                    if conn.state is State.OPEN:
                        await wake
                finally:
                    conn.direct = None
                    conn.wake = None
                    link.on_closing = None
                await reader.finish()
                if not conn.fell_back:
                    return
                continue
            try:
                frame = await conn.recv()
            except ConnectionClosed:
                return
            link.last_frame = clock()
            pending = receive(link, frame)   # None: handled already (room messages, most frames)
            if pending is not None:
                await pending

    async def _handle(self, conn: DirectConnection) -> None:   # serve(create_connection=DirectConnection)
        limits = self.limits
        metrics = self.metrics
        if limits.socket_send_buffer is not None:
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
        # The handshake is over: its request headers and response are not needed any more and would stay
        # alive as long as the connection (~2 KB per idle player). websockets reads ``request`` as "the
        # handshake happened", so a bare one stays.
        if conn.request is not None:
            conn.request = Request(conn.request.path, Headers())
        conn.response = None
        sink = WsSink(conn)
        link = Link(sink, limits, metrics, time.monotonic())
        self.links.add(link)
        metrics.connections.inc()
        try:
            await self._read(conn, link)
            if link.closing:
                await link.wait_flushed(limits.close_timeout)
                await sink.wait_closing()
            else:
                metrics.disconnects.labels("client_closed").inc()
        except asyncio.CancelledError:
            raise
        except Exception:
            event(log, "connection_failed", level=logging.ERROR, exc_info=True)
        finally:
            self.links.discard(link)
            metrics.connections.dec()
            link.cancel_writer()
            await self.closed(link)
