"""Codec: both encodings, the size limit, error codes with readable messages, rid echo, speed."""

from __future__ import annotations

import json
import math
import time

import msgpack
import pytest

from shared import messages as m
from shared.codec import DEFAULT_MAX_MESSAGE_BYTES, decode_client, decode_server, encode, encode_raw
from shared.errors import ErrorCode, MessageTooLarge, ProtocolError

MOVE = {"t": "move", "rid": 9, "x": 1.5, "y": 2.5}


def mp(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def js(obj) -> str:
    return json.dumps(obj)


def error_of(frame, **kw) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(frame, **kw)
    return info.value


@pytest.mark.parametrize("wire", [mp, js])
def test_decode_client_both_encodings(wire) -> None:
    assert decode_client(wire(MOVE)) == m.Move(rid=9, x=1.5, y=2.5)


@pytest.mark.parametrize("binary", [True, False])
def test_encode_then_decode_round_trip(binary: bool) -> None:
    login = m.Login(rid=3, name="alice", secret="s" * 20)
    frame = encode(login, binary)
    assert isinstance(frame, bytes if binary else str)
    assert decode_client(frame) == login


def test_encode_omits_none_and_uses_aliases() -> None:
    assert encode(m.Ping(), binary=False) == '{"t":"ping"}'
    assert msgpack.unpackb(encode(m.Ping())) == {"t": "ping"}
    chat = encode(m.ChatMessage(from_="bob", text="hi", ts=1.0), binary=False)
    assert json.loads(chat) == {"t": "chat", "from": "bob", "text": "hi", "ts": 1.0}


def test_encode_json_is_compact_utf8() -> None:
    assert encode(m.Chat(text="é🌲"), binary=False) == '{"t":"chat","text":"é🌲"}'


def test_encode_raw_hot_path() -> None:
    body = {"t": "tick", "n": 1, "ts": 2.0, "moved": [(1, 2.0, 3.0)], "joined": [], "left": [], "mobs": []}
    assert msgpack.unpackb(encode_raw(body, True)) == {**body, "moved": [[1, 2.0, 3.0]]}
    expected = '{"t":"tick","n":1,"ts":2.0,"moved":[[1,2.0,3.0]],"joined":[],"left":[],"mobs":[]}'
    assert encode_raw(body, False) == expected
    assert isinstance(decode_server(encode_raw(body, True)), m.Tick)
    with pytest.raises(ValueError):
        encode_raw({"t": "pong", "ts": math.nan}, False)


# --- size limit ---------------------------------------------------------------------------------
def test_size_limit_is_checked_before_decoding() -> None:
    big = b"\xc1" * (DEFAULT_MAX_MESSAGE_BYTES + 1)  # not even msgpack: the size decides first
    err = error_of(big)
    assert isinstance(err, MessageTooLarge) and err.code == "too_large"
    assert err.size == DEFAULT_MAX_MESSAGE_BYTES + 1 and err.limit == DEFAULT_MAX_MESSAGE_BYTES


def test_size_limit_boundary_bytes() -> None:
    frame = mp({"t": "chat", "text": "x" * 100})
    assert decode_client(frame, max_size=len(frame)).text == "x" * 100
    assert isinstance(error_of(frame, max_size=len(frame) - 1), MessageTooLarge)


def test_size_limit_counts_utf8_bytes_of_text_frames() -> None:
    frame = '{"t":"chat","text":"' + "é" * 100 + '"}'  # unescaped: 2 bytes per character
    size = len(frame.encode())
    assert size > len(frame)
    assert decode_client(frame, max_size=size).text == "é" * 100
    assert isinstance(error_of(frame, max_size=size - 1), MessageTooLarge)
    assert isinstance(error_of("x" * 20000), MessageTooLarge)


def test_no_size_limit_when_none() -> None:
    frame = mp({"t": "move", "x": 1, "y": 2, "pad": "p" * 50000})
    assert decode_client(frame, max_size=None) == m.Move(x=1, y=2)


# --- bad frames -----------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    b"\xc1", b"", b"\x92\x01", mp({"t": "ping"}) + b"\x00", b"\x91" * 3000, b"\xdd\xff\xff\xff\xff",
    mp({"t": "ping", "x": msgpack.ExtType(1, b"ab")}), b"\x81\x01\x02",
    "", "{", "not json", '{"t":"move","x":NaN,"y":1}', '{"t":"move","x":Infinity,"y":1}', "[" * 5000,
])
def test_undecodable_frames_are_bad_frame(frame) -> None:
    err = error_of(frame)
    assert err.code == ErrorCode.BAD_FRAME
    assert "Traceback" not in err.message and len(err.message) < 300
    assert err.rid is None


@pytest.mark.parametrize("wire", [mp, js])
@pytest.mark.parametrize("obj", [[1, 2], "ping", 5, None, True])
def test_non_map_is_bad_message(wire, obj) -> None:
    err = error_of(wire(obj))
    assert err.code == ErrorCode.BAD_MESSAGE and "map" in err.message


@pytest.mark.parametrize("wire", [mp, js])
def test_missing_or_non_string_t_is_bad_message(wire) -> None:
    assert error_of(wire({"rid": 4})).code == ErrorCode.BAD_MESSAGE
    err = error_of(wire({"t": 5, "rid": 4}))
    assert err.code == ErrorCode.BAD_MESSAGE and err.rid == 4


@pytest.mark.parametrize("wire", [mp, js])
def test_unknown_type_echoes_rid(wire) -> None:
    err = error_of(wire({"t": "dance", "rid": 77}))
    assert err.code == ErrorCode.UNKNOWN_TYPE and err.rid == 77 and "dance" in err.message
    assert error_of(wire({"t": "welcome", "rid": 1})).code == ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize("wire", [mp, js])
def test_validation_failure_is_bad_message_with_field_and_reason(wire) -> None:
    err = error_of(wire({"t": "move", "rid": 5, "x": "1", "y": 2}))
    assert err.code == ErrorCode.BAD_MESSAGE and err.rid == 5
    assert err.message.startswith("x: ") and "number" in err.message
    err = error_of(wire({"t": "login", "rid": 6, "name": "a b", "secret": "short"}))
    assert "name:" in err.message and "secret:" in err.message and err.rid == 6


def test_nan_in_msgpack_is_bad_message() -> None:
    err = error_of(mp({"t": "move", "x": math.nan, "y": 1.0}))
    assert err.code == ErrorCode.BAD_MESSAGE and "finite" in err.message


@pytest.mark.parametrize("rid", ["7", True, 2**64, 1.5, None])
def test_invalid_rid_is_not_echoed(rid) -> None:
    wire = js if rid == 2**64 else mp  # msgpack cannot even carry 2**64
    err = error_of(wire({"t": "top", "n": 0, "rid": rid}))
    assert err.code == ErrorCode.BAD_MESSAGE and err.rid is None


def test_error_message_is_bounded() -> None:
    frame = mp({"t": "tick", "rid": 1})  # unknown type for clients: short message
    assert len(error_of(frame).message) < 100
    three = error_of(mp({"t": "login", "name": 1, "secret": 2, "rid": "x"})).message
    assert three.count(";") == 2 and "more" not in three            # up to 3 problems: each one named
    with pytest.raises(ProtocolError) as info:                        # 5 problems: 3 named, the rest counted
        decode_server(mp({"t": "welcome", "session": 1, "token": 2, "character": 3, "tick_rate": "x",
                          "protocol": "y"}), validate=True)
    many = info.value.message
    assert many.startswith("session: ") and many.endswith("; and 2 more") and many.count(";") == 3
    assert len(many) <= 300


def test_extra_fields_ignored_by_codec() -> None:
    assert decode_client(mp({**MOVE, "new": [1, 2, 3]})) == m.Move(rid=9, x=1.5, y=2.5)


def test_bytearray_and_memoryview_frames() -> None:
    frame = mp(MOVE)
    assert decode_client(bytearray(frame)) == decode_client(memoryview(frame)) == m.Move(rid=9, x=1.5, y=2.5)


# --- decode_server --------------------------------------------------------------------------------
def test_decode_server_validates_or_returns_the_dict() -> None:
    frame = mp({"t": "pong", "rid": 1, "ts": 5.5})
    assert decode_server(frame) == m.Pong(rid=1, ts=5.5)
    assert decode_server(frame, validate=False) == {"t": "pong", "rid": 1, "ts": 5.5}
    assert decode_server(js({"t": "pong", "ts": "x"}), False) == {"t": "pong", "ts": "x"}
    with pytest.raises(ProtocolError) as info:
        decode_server(js({"t": "pong", "ts": "x"}))
    assert info.value.code == ErrorCode.BAD_MESSAGE
    with pytest.raises(ProtocolError) as info:
        decode_server(mp({"t": "move", "x": 1, "y": 2}), validate=False)
    assert info.value.code == ErrorCode.UNKNOWN_TYPE


def test_decode_server_has_no_size_limit_by_default() -> None:
    players = [[i, f"p{i:05d}", 1.0, 2.0] for i in range(2000)]
    frame = mp({"t": "joined", "room": "r", "you": 1, "players": players, "mobs": [], "bounds": [1, 1]})
    assert len(frame) > DEFAULT_MAX_MESSAGE_BYTES
    assert len(decode_server(frame).players) == 2000
    with pytest.raises(MessageTooLarge):
        decode_server(frame, max_size=DEFAULT_MAX_MESSAGE_BYTES)


def test_decode_client_speed_budget() -> None:
    """Measured ~2.3 us (msgpack) / ~3.2 us (JSON) per move here; the bound is loose for slow CI."""
    frames = [mp(MOVE), js(MOVE), mp({"t": "attack", "rid": 3, "mob": 7})]
    n = 5000
    for frame in frames:
        start = time.perf_counter()
        for _ in range(n):
            decode_client(frame)
        per_message = (time.perf_counter() - start) / n
        assert per_message < 50e-6, per_message
