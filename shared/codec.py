"""Frames ⇄ messages: msgpack for binary frames, compact JSON for text frames.

Pure functions, no I/O. Decoding checks the size first (nothing is parsed beyond the limit), then
parses, then validates against the model chosen by ``t``; every failure becomes a
:class:`~shared.errors.ProtocolError` whose message is short and safe to send back to the peer.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError

from .errors import ErrorCode, MessageTooLarge, ProtocolError
from .messages import CLIENT_TYPES, INT64_MIN, SERVER_TYPES, UINT64_MAX, Message

DEFAULT_MAX_MESSAGE_BYTES = 16384
_MAX_ERRORS_SHOWN = 3
_MAX_ERROR_TEXT = 300


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_json_decode = json.JSONDecoder(parse_constant=_reject_constant).decode
_packers = threading.local()   # a Packer per thread, reused: half the cost of packb for small maps


def _pack(obj: Any) -> bytes:
    """``msgpack.packb(obj)`` through this thread's Packer (a Packer must not be shared across threads)."""
    pack = getattr(_packers, "pack", None)
    if pack is None:
        pack = _packers.pack = msgpack.Packer(use_bin_type=True).pack
    return pack(obj)
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _frame_size(frame: bytes | bytearray | memoryview | str, max_size: int | None) -> None:
    """Raise MessageTooLarge without encoding or parsing anything more than needed."""
    if max_size is None:
        return
    if isinstance(frame, str):
        n = len(frame)
        if n > max_size:  # every character is at least one UTF-8 byte
            raise MessageTooLarge(n, max_size)
        if n * 4 > max_size:  # could exceed the limit once encoded: count exactly
            size = len(frame.encode("utf-8", "surrogatepass"))
            if size > max_size:
                raise MessageTooLarge(size, max_size)
    elif len(frame) > max_size:
        raise MessageTooLarge(len(frame), max_size)


def _parse(frame: bytes | bytearray | memoryview | str) -> Any:
    """Bytes → msgpack, str → JSON; anything undecodable → ``bad_frame``."""
    if isinstance(frame, str):
        try:
            return _json_decode(frame)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"text frame is not valid JSON: {_short(exc)}") from None
    n = len(frame)
    try:
        # Explicit limits: no string, array or map can claim more room than the frame itself has.
        return msgpack.unpackb(
            frame, raw=False, strict_map_key=True, use_list=True,
            max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n, max_ext_len=0,
        )
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        reason = f"binary frame is not valid msgpack: {_short(exc)}"
        raise ProtocolError(ErrorCode.BAD_FRAME, reason) from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _echo_rid(raw: dict[str, Any]) -> int | None:
    rid = raw.get("rid")
    if type(rid) is int and INT64_MIN <= rid <= UINT64_MAX:
        return rid
    return None


def _describe(exc: ValidationError) -> str:
    """A one-line, bounded summary of pydantic errors: ``field: reason; field: reason``."""
    parts = []
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    for err in errors[:_MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more")
    text = "; ".join(parts)
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def parse_frame(frame: bytes | str, *, max_size: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Size check, parse, and check the shape every message has (a map with a string ``t``).

    Raises :class:`MessageTooLarge` before parsing anything over ``max_size``, else :class:`ProtocolError`
    (``bad_frame`` / ``bad_message``, ``rid`` set when the frame carried a valid one). Validation of the
    fields is the caller's (``validate``): the server picks the model by ``t`` and by the player's room.
    """
    _frame_size(frame, max_size)
    raw = _parse(frame)
    if type(raw) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a map")
    if type(raw.get("t")) is not str:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "t: a message needs a string field 't'", _echo_rid(raw))
    return raw


def validate(raw: dict[str, Any], cls: type[BaseModel], rid: int | None = None) -> Any:
    """``raw`` validated by ``cls``; failures are ``bad_message`` naming the fields (``rid``: to echo,
    default the frame's own)."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, _describe(exc), _echo_rid(raw) if rid is None else rid) \
            from None


def _decode(frame: Any, types: dict[str, type[Message]], max_size: int | None, check: bool) -> Any:
    raw = parse_frame(frame, max_size=max_size)
    t = raw["t"]
    cls = types.get(t)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {t[:40]!r}", _echo_rid(raw))
    if not check:
        return raw
    return validate(raw, cls)


def decode_client(frame: bytes | str, *, max_size: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Decode one client frame into its model.

    Raises :class:`MessageTooLarge` (answer ``bye`` ``too_large``) before parsing anything when the
    frame is over ``max_size`` bytes, else :class:`ProtocolError` with code ``bad_frame``,
    ``bad_message`` or ``unknown_type`` and ``rid`` set when the frame carried a valid integer rid.
    """
    return _decode(frame, CLIENT_TYPES, max_size, True)


def decode_server(frame: bytes | str, validate: bool = True, *, max_size: int | None = None) -> Any:
    """Decode one server frame: a model, or with ``validate=False`` the plain dict (``t`` checked only).

    Same errors as :func:`decode_client`; no size limit unless ``max_size`` is given (server frames
    such as ``joined`` in a crowded room may be large).
    """
    return _decode(frame, SERVER_TYPES, max_size, validate)


COMPACT = "compact"
"""Tick format a client may ask for at ``login`` / ``resume`` (``tick_format``): every position in a ``tick``
(``moved`` [id, x, y], ``joined`` [id, name, x, y]) is an integer number of tenths of a unit."""
COMPACT_SCALE = 10


def compact_tick(body: dict[str, Any]) -> dict[str, Any]:
    """A tick body (or whole tick) with its positions in tenths of a unit, as integers (``COMPACT``)."""
    out = dict(body)
    moved = body.get("moved")
    if moved:
        out["moved"] = [[e[0], round(e[1] * COMPACT_SCALE), round(e[2] * COMPACT_SCALE), *e[3:]]
                        for e in moved]
    joined = body.get("joined")
    if joined:
        out["joined"] = [[e[0], e[1], round(e[2] * COMPACT_SCALE), round(e[3] * COMPACT_SCALE), *e[4:]]
                         for e in joined]
    return out


def expand_tick(body: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``compact_tick`` for a client: positions back in units (floats)."""
    out = dict(body)
    if body.get("moved"):
        out["moved"] = [[e[0], e[1] / COMPACT_SCALE, e[2] / COMPACT_SCALE, *e[3:]] for e in body["moved"]]
    if body.get("joined"):
        out["joined"] = [[e[0], e[1], e[2] / COMPACT_SCALE, e[3] / COMPACT_SCALE, *e[4:]]
                         for e in body["joined"]]
    return out


def encode(model: BaseModel, binary: bool = True) -> bytes | str:
    """Model → one frame: msgpack bytes (``binary``) or compact JSON text; ``None`` fields omitted,
    wire names used (``from``)."""
    return encode_raw(model.model_dump(by_alias=True, exclude_none=True), binary)


def encode_raw(obj: dict[str, Any], binary: bool = True) -> bytes | str:
    """Plain dict (already wire-shaped, e.g. a tick body) → one frame, without pydantic.

    The server's hot path: the caller guarantees the shape. JSON output refuses NaN/infinity
    (``ValueError``); tuples become arrays in both encodings.
    """
    if binary:
        return _pack(obj)
    return _json_encode(obj)
