"""Frame in -> handler: size check, rate limit, decode, table ``t -> handler``, errors out.

``error_for`` is the ONE place where exceptions become protocol error codes; anything unexpected becomes
``internal`` with the stack logged and a generic message (never a traceback to the client).
Session-level messages are answered here; room inputs go to the room runner's queue and are answered at
the next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared import messages as m
from shared.codec import decode_client
from shared.errors import MessageTooLarge, ProtocolError

from .characters import AuthFailed
from .cluster import RoomUnavailable
from .game.room import GameError
from .loginguard import LoginThrottled
from .logs import event
from .ratelimit import Verdict
from .session import Link, RoomBusy, Session
from .tokens import BadToken

if TYPE_CHECKING:
    from .app import GameServer

log = logging.getLogger("gameserver.router")


class RequestError(Exception):
    """A handler refuses a request with a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_for(exc: BaseException) -> tuple[str, str]:
    """Exception -> (error code, client-safe message)."""
    if isinstance(exc, RequestError | ProtocolError | GameError | LoginThrottled):
        return exc.code, exc.message
    if isinstance(exc, AuthFailed):
        return "auth_failed", "wrong name or secret"
    if isinstance(exc, BadToken):
        return "bad_token", f"cannot resume: {exc}"
    if isinstance(exc, RoomBusy | RoomUnavailable):
        return "internal", str(exc)
    event(log, "handler_failed", level=logging.ERROR, exc_info=(type(exc), exc, exc.__traceback__),
          error=repr(exc))
    return "internal", "internal server error"


def _rid_of(frame: bytes | str, max_size: int) -> int | None:
    """Best-effort rid of a frame we are dropping (for the rate_limited error)."""
    try:
        return decode_client(frame, max_size=max_size).rid
    except ProtocolError as exc:
        return exc.rid
    except Exception:
        return None


def _too_large(frame: bytes | str, limit: int) -> bool:
    if isinstance(frame, str):
        if len(frame) > limit:
            return True
        return len(frame) * 4 > limit and len(frame.encode("utf-8", "replace")) > limit
    return len(frame) > limit


Handler = Callable[["GameServer", Link, Any], Awaitable[None]]


class Router:
    def __init__(self, server: GameServer) -> None:
        self.server = server
        self.max_bytes = server.config.limits.max_message_bytes
        self.handlers: dict[str, tuple[Handler, bool]] = {
            # t: (handler, needs a session)
            "login": (on_login, False),
            "resume": (on_resume, False),
            "join": (on_join, True),
            "leave": (on_leave, True),
            "move": (on_move, True),
            "chat": (on_chat, True),
            "attack": (on_attack, True),
            "me": (on_me, True),
            "top": (on_top, True),
            "ping": (on_ping, False),
        }

    def reply_error(self, link: Link | None, exc: BaseException, rid: int | None) -> None:
        code, message = error_for(exc)
        self.server.metrics.errors.labels(code).inc()
        if link is None:
            return
        body: dict[str, Any] = {"t": "error", "code": code, "message": message}
        if isinstance(exc, LoginThrottled):
            body["retry_after"] = round(exc.retry_after, 3)
        if rid is not None:
            body["rid"] = rid
        link.send(body)

    async def receive(self, link: Link, frame: bytes | str) -> None:
        """Handle one frame from ``link``. Never raises (except cancellation)."""
        metrics = self.server.metrics
        metrics.bytes_in.inc(len(frame))
        if link.binary is None:
            link.binary = not isinstance(frame, str)
        if _too_large(frame, self.max_bytes):
            event(log, "too_large", level=logging.INFO, size=len(frame))
            link.bye("too_large")
            return
        verdict = link.bucket.check(time.monotonic())
        if verdict is not Verdict.ALLOW:
            metrics.queue_drops.labels("rate_limited").inc()
            if verdict is Verdict.KICK:
                event(log, "rate_kick", level=logging.INFO,
                      session=link.session.id if link.session else None)
                link.bye("rate_limited")
            elif verdict is Verdict.DROP_NOTIFY:
                self.reply_error(link, RequestError("rate_limited", "too many messages, slow down"),
                                 _rid_of(frame, self.max_bytes))
            return
        try:
            msg = decode_client(frame, max_size=self.max_bytes)
        except MessageTooLarge:
            link.bye("too_large")
            return
        except ProtocolError as exc:
            metrics.msg_in("_invalid").inc()
            self.reply_error(link, exc, exc.rid)
            return
        metrics.msg_in(msg.t).inc()
        handler, needs_session = self.handlers[msg.t]
        try:
            if needs_session and link.session is None:
                raise RequestError("not_logged_in", "log in first")
            await handler(self.server, link, msg)
        except Exception as exc:
            self.reply_error(link, exc, msg.rid)


def _with_rid(body: dict[str, Any], rid: int | None) -> dict[str, Any]:
    if rid is not None:
        body["rid"] = rid
    return body


def _session(link: Link) -> Session:
    assert link.session is not None
    return link.session


async def on_login(server: GameServer, link: Link, msg: m.Login) -> None:
    await server.login(link, msg.name, msg.secret, msg.rid)


async def on_resume(server: GameServer, link: Link, msg: m.Resume) -> None:
    await server.resume(link, msg.token, msg.rid)


async def on_join(server: GameServer, link: Link, msg: m.Join) -> None:
    session = _session(link)
    runner = server.runners.get(msg.room)
    if runner is None:
        raise RequestError("no_such_room", f"no room {msg.room!r}")
    owner = await server.cluster.ensure_room(msg.room)   # None: this node runs the room
    if session.ended or link.session is not session:
        return
    if owner is not None:
        await server.cluster.hand_off(session, room=msg.room, target=owner, rid=msg.rid)
        return
    session.submit(runner, "join", None, msg.rid)


async def on_leave(server: GameServer, link: Link, msg: m.Leave) -> None:
    session = _session(link)
    if session.target is None:
        raise RequestError("not_in_room", "not in a room")
    session.submit(session.target, "leave", None, msg.rid)


async def on_move(server: GameServer, link: Link, msg: m.Move) -> None:
    session = _session(link)
    if session.target is None:
        raise RequestError("not_in_room", "not in a room")
    session.submit(session.target, "move", (msg.x, msg.y), msg.rid)


async def on_attack(server: GameServer, link: Link, msg: m.Attack) -> None:
    session = _session(link)
    if session.target is None:
        raise RequestError("not_in_room", "not in a room")
    session.submit(session.target, "attack", msg.mob, msg.rid)


async def on_chat(server: GameServer, link: Link, msg: m.Chat) -> None:
    session = _session(link)
    if session.target is None:
        raise RequestError("not_in_room", "not in a room")
    session.submit(session.target, "chat", msg.text, msg.rid)


async def on_me(server: GameServer, link: Link, msg: m.Me) -> None:
    ch = _session(link).character
    await server.cluster.refresh(ch)
    link.send(_with_rid({"t": "profile", "character": ch.wire(), "kills": ch.kills}, msg.rid))


async def on_top(server: GameServer, link: Link, msg: m.Top) -> None:
    link.send(_with_rid({"t": "top", "entries": await server.ranking.top(msg.n)}, msg.rid))


async def on_ping(server: GameServer, link: Link, msg: m.Ping) -> None:
    link.send(_with_rid({"t": "pong", "ts": time.time()}, msg.rid))
