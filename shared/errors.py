"""Protocol error codes, bye reasons and the one exception tree of the wire layer.

Exception tree::

    ProtocolError(code, message, rid=None)   a frame the peer sent cannot be accepted;
    │                                         answer it with an ``error`` message (code, message, rid)
    └── MessageTooLarge                       the frame exceeds the size limit; answer ``bye`` ``too_large``
                                              and close the socket (never an ``error``)

``ProtocolError.message`` is short and human readable: it is safe to send to the peer as is.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every ``error.code`` of protocol version 1."""

    BAD_FRAME = "bad_frame"  # not decodable (not msgpack / not JSON)
    BAD_MESSAGE = "bad_message"  # decodable, fails validation
    UNKNOWN_TYPE = "unknown_type"
    NOT_LOGGED_IN = "not_logged_in"
    AUTH_FAILED = "auth_failed"
    BAD_TOKEN = "bad_token"
    RATE_LIMITED = "rate_limited"
    NOT_IN_ROOM = "not_in_room"
    NO_SUCH_ROOM = "no_such_room"
    ROOM_FULL = "room_full"  # extension: that instance has no free seat (``join NAME~n``)
    NO_SUCH_MOB = "no_such_mob"
    OUT_OF_RANGE = "out_of_range"
    COOLDOWN = "cooldown"
    INTERNAL = "internal"


class ByeReason(StrEnum):
    """Every ``bye.reason`` of protocol version 1; the server closes the socket after sending it."""

    REPLACED = "replaced"
    SHUTDOWN = "shutdown"
    IDLE = "idle"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"


class ProtocolError(Exception):
    """A received frame was rejected; ``code`` is an :class:`ErrorCode` value (or ``too_large``).

    ``rid`` is the request id found in the rejected frame when it was a valid integer, so the
    ``error`` reply can echo it; ``None`` otherwise.
    """

    def __init__(self, code: str, message: str, rid: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.rid = rid

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, rid={self.rid!r})"


class MessageTooLarge(ProtocolError):
    """The frame is larger than the configured limit; it was not decoded at all."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(ByeReason.TOO_LARGE, f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit
