"""The game server's one exception tree, and the ONE place where exceptions become wire errors.

::

    ServerError(code, message)      a request is refused; ``code`` is the protocol error code
    ├── RequestError                generic refusal (not_logged_in, not_in_room, no_such_room, ...)
    ├── AuthFailed                  auth_failed: wrong name or secret
    ├── BadToken                    bad_token: a resume token that is forged, expired or unknown
    ├── RoomBusy                    internal: a room's bounded input queue is full
    ├── RoomUnavailable             internal: a room's owner node cannot be reached or replaced in time
    └── Retry(code, message, retry_after)
                                    rate_limited / busy / server_full: try again after ``retry_after`` s
    RoomError (gameserver.rooms)    raised by a room type's handler to refuse a message with its own code
    ProtocolError (shared.errors)   a frame that cannot be accepted (bad_frame, bad_message, unknown_type)

``wire_error`` maps any exception to the ``error`` body sent to the client. Anything outside the tree is
``internal`` with a generic message; the caller logs it with its traceback (never sent to the client).
"""

from __future__ import annotations

from typing import Any

from shared.errors import ProtocolError

from .rooms.api import RoomError


class ServerError(Exception):
    """A request the server refuses; ``code`` and ``message`` go to the client as they are."""

    code = "internal"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message or self.code


class RequestError(ServerError):
    """A handler refuses a request with a protocol error code: ``RequestError("not_in_room", "...")``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class AuthFailed(ServerError):
    """Wrong secret for an existing character (the client is not told which of name or secret)."""

    code = "auth_failed"

    def __init__(self, detail: str = "") -> None:
        super().__init__("wrong name or secret")
        self.detail = detail


class BadToken(ServerError):
    """A resume token was refused (the message says why: expired, forged, unknown session)."""

    code = "bad_token"

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot resume: {reason}")


class RoomBusy(ServerError):
    """A room's bounded input queue is full; answered with ``error`` ``internal``."""


class RoomUnavailable(ServerError):
    """A room could not be reached or taken over in time."""


class Retry(ServerError):
    """Refused for now: the client should try again after ``retry_after`` seconds."""

    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


def is_expected(exc: BaseException) -> bool:
    """True for refusals (answered as they are); False for bugs (logged with their traceback)."""
    return isinstance(exc, ServerError | RoomError | ProtocolError)


def wire_error(exc: BaseException, rid: int | None = None) -> dict[str, Any]:
    """The ``error`` message for ``exc`` (``rid`` echoed when given)."""
    if isinstance(exc, ServerError | RoomError | ProtocolError):
        code, message = exc.code, exc.message
    else:
        code, message = "internal", "internal server error"
    body: dict[str, Any] = {"t": "error", "code": code, "message": message}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, Retry) and retry_after is not None:
        body["retry_after"] = round(float(retry_after), 3)
    if rid is not None:
        body["rid"] = rid
    return body
