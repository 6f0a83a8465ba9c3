"""Frame in -> handler: size check, rate limit, parse, a table ``t -> handler``, errors out.

Two kinds of messages:
- the session layer (``login``, ``resume``, ``join``, ``leave``, ``me``, ``top``, ``ping``, ``chat``),
  validated by the protocol models of ``shared.messages`` and handled here (room inputs go to the
  session's room runner, applied at its next tick);
- the messages a room type registers (``@on_message``; the built-in game's ``move`` and ``attack``),
  validated by that room type's model and queued to the session's room, handled at its next tick in
  arrival order. A type no room type of this server knows is ``unknown_type``; one that the session's
  current room does not know is ``unknown_type`` too, and one some room knows while the session is in no
  room is ``not_in_room``.

``gameserver.errors.wire_error`` is the ONE place where exceptions become protocol error codes; anything
unexpected becomes ``internal`` with the stack logged and a generic message (never a traceback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared import messages as m
from shared.codec import parse_frame, validate
from shared.errors import ProtocolError

from .errors import RequestError, is_expected, wire_error
from .logs import event
from .ratelimit import Verdict
from .rooms.api import SESSION_TYPES
from .session import Link, Session

if TYPE_CHECKING:
    from .config import LimitsConfig
    from .metrics import Metrics
    from .rooms.host import RoomHost
    from .sessions import SessionManager

log = logging.getLogger("gameserver.router")

SESSION_MODELS: dict[str, type[m.Message]] = {
    t: cls for t, cls in m.CLIENT_TYPES.items() if t in SESSION_TYPES}

Handler = Callable[[Link, Any], Awaitable[None]]


def _rid_of(frame: bytes | str, max_size: int) -> int | None:
    """Best-effort rid of a frame we are dropping (for the rate_limited error)."""
    try:
        rid = parse_frame(frame, max_size=max_size).get("rid")
    except ProtocolError as exc:
        return exc.rid
    except Exception:
        return None
    return rid if type(rid) is int and m.INT64_MIN <= rid <= m.UINT64_MAX else None


def _too_large(frame: bytes | str, limit: int) -> bool:
    if isinstance(frame, str):
        if len(frame) > limit:
            return True
        return len(frame) * 4 > limit and len(frame.encode("utf-8", "replace")) > limit
    return len(frame) > limit


def _with_rid(body: dict[str, Any], rid: int | None) -> dict[str, Any]:
    if rid is not None:
        body["rid"] = rid
    return body


class Router:
    def __init__(self, sessions: SessionManager, rooms: RoomHost, metrics: Metrics, limits: LimitsConfig,
                 top: Callable[[int], Awaitable[list[dict[str, Any]]]],
                 refresh: Callable[[Any], Awaitable[None]]) -> None:
        self.sessions = sessions
        self.rooms = rooms
        self.metrics = metrics
        self.max_bytes = limits.max_message_bytes
        self.top = top
        self.refresh = refresh
        self.handlers: dict[str, tuple[Handler, bool]] = {
            # t: (handler, needs a session)
            "login": (self.on_login, False),
            "resume": (self.on_resume, False),
            "join": (self.on_join, True),
            "leave": (self.on_leave, True),
            "chat": (self.on_chat, True),
            "me": (self.on_me, True),
            "top": (self.on_top, True),
            "ping": (self.on_ping, False),
            "rooms": (self.on_rooms, True),
        }

    def reply_error(self, link: Link | None, exc: BaseException, rid: int | None) -> None:
        body = wire_error(exc, rid)
        if not is_expected(exc):
            event(log, "handler_failed", level=logging.ERROR,
                  exc_info=(type(exc), exc, exc.__traceback__), error=repr(exc))
        self.metrics.errors.labels(body["code"]).inc()
        if link is not None:
            _send(link, body)

    def receive(self, link: Link, frame: bytes | str) -> Awaitable[None] | None:
        """Handle one frame from ``link``: room messages (most frames) at once, returning None; a
        session-layer message returns the awaitable that handles it (login, resume, ... do I/O). Never
        raises (except cancellation), nor does the awaitable."""
        metrics = self.metrics
        metrics.tally_bytes_in += len(frame)
        if link.binary is None:
            link.binary = not isinstance(frame, str)
        if _too_large(frame, self.max_bytes):
            event(log, "too_large", level=logging.INFO, size=len(frame))
            link.bye("too_large")
            return None
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
            return None
        raw: dict[str, Any] = {}
        try:
            raw = parse_frame(frame, max_size=None)   # the size was checked above
            t = raw["t"]
            model = SESSION_MODELS.get(t)
            if model is None:
                self._room_message(link, t, raw)
                return None
            msg = validate(raw, model)
        except ProtocolError as exc:
            metrics.count_in("_invalid")
            self.reply_error(link, exc, exc.rid)
            return None
        except Exception as exc:   # a room message refused (not in a room, room busy)
            self.reply_error(link, exc, _rid(raw))
            return None
        metrics.count_in(t)
        return self._session_message(link, t, msg)

    async def _session_message(self, link: Link, t: str, msg: Any) -> None:
        handler, needs_session = self.handlers[t]
        try:
            if needs_session and link.session is None:
                raise RequestError("not_logged_in", "log in first")
            await handler(link, msg)
        except Exception as exc:
            self.reply_error(link, exc, msg.rid)

    def _room_message(self, link: Link, t: str, raw: dict[str, Any]) -> None:
        """Validate a room type's message by its model and queue it to the session's room."""
        if t not in self.rooms.message_types:
            raise ProtocolError("unknown_type", f"unknown message type {t[:40]!r}", _rid(raw))
        session = link.session
        target = session.target if session is not None else None
        entry = target.room.messages.get(t) if target is not None else None
        rid = _rid(raw)
        fields = {k: v for k, v in raw.items() if k != "t" and k != "rid"}
        if entry is None:
            if session is not None and target is not None:
                raise ProtocolError("unknown_type", f"room {target.name} has no message type {t[:40]!r}", rid)
            validate(fields, self.rooms.model_for(t), rid)   # a bad message is bad_message first (v1)
            if session is None:
                raise RequestError("not_logged_in", "log in first")
            raise RequestError("not_in_room", "not in a room")
        msg = validate(fields, entry[0], rid)
        self.metrics.count_in(t)
        session.submit(target, "message", (t, msg), rid)   # type: ignore[union-attr]

    # -- session-layer handlers --------------------------------------------------------------------
    async def on_login(self, link: Link, msg: m.Login) -> None:
        link.compact = msg.tick_format == "compact"
        await self.sessions.login(link, msg.name, msg.secret, msg.rid, msg.tick_format)

    async def on_resume(self, link: Link, msg: m.Resume) -> None:
        link.compact = msg.tick_format == "compact"
        await self.sessions.resume(link, msg.token, msg.rid, msg.tick_format, seq=msg.seq)

    async def on_join(self, link: Link, msg: m.Join) -> None:
        session = _session(link)
        await self.sessions.join(session, msg.room, msg.rid)

    async def on_leave(self, link: Link, msg: m.Leave) -> None:
        session = _session(link)
        if session.target is None:
            raise RequestError("not_in_room", "not in a room")
        session.submit(session.target, "leave", None, msg.rid)

    async def on_chat(self, link: Link, msg: m.Chat) -> None:
        session = _session(link)
        if session.target is None:
            raise RequestError("not_in_room", "not in a room")
        session.submit(session.target, "chat", msg.text, msg.rid)

    async def on_me(self, link: Link, msg: m.Me) -> None:
        ch = _session(link).character
        await self.refresh(ch)
        _send(link, _with_rid({"t": "profile", "character": ch.wire(), "kills": ch.kills}, msg.rid))

    async def on_top(self, link: Link, msg: m.Top) -> None:
        _send(link, _with_rid({"t": "top", "entries": await self.top(msg.n)}, msg.rid))

    async def on_rooms(self, link: Link, msg: m.Rooms) -> None:
        if msg.room not in self.rooms.types:
            raise RequestError("no_such_room", f"no room {msg.room!r}")
        _send(link, _with_rid({"t": "rooms", "entries": await self.rooms.listing(msg.room)}, msg.rid))

    async def on_ping(self, link: Link, msg: m.Ping) -> None:
        link.send(_with_rid({"t": "pong", "ts": time.time()}, msg.rid))


def _send(link: Link, body: dict[str, Any]) -> None:
    """A reply: through the link's session when it has one (numbered, kept for a resume), else as is."""
    session = link.session
    if session is not None:
        session.send(body)
    else:
        link.send(body)


def _rid(raw: dict[str, Any]) -> int | None:
    rid = raw.get("rid")
    return rid if type(rid) is int and m.INT64_MIN <= rid <= m.UINT64_MAX else None


def _session(link: Link) -> Session:
    assert link.session is not None
    return link.session
