"""The seq splice against a full encode, byte for byte, in both encodings and every map/int size."""

from __future__ import annotations

import msgpack
import pytest

from gameserver.seqwire import pack_uint, seq_prefix, seq_tail, with_seq
from gameserver.wsframe import payload_frame, server_frame
from shared.codec import encode_raw

SEQS = [1, 2, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1]
BODIES = [
    {"t": "chat", "from": "alice", "text": "hello, forest! \u00e9\u00e8 \U0001f332", "ts": 1764129600.2},
    {"t": "xp", "gained": 50, "xp": 200, "level": 2, "reason": "kill:7", "rid": 9},
    {"t": "x"},
    {"t": "wide", **{f"k{i}": i for i in range(14)}},          # 15 entries: fixmap -> map16
    {"t": "wider", **{f"k{i}": i for i in range(40)}},         # map16 already
    {"t": "top", "entries": [{"name": f"n{i}", "level": 1, "xp": i} for i in range(100)], "rid": 3},
]


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: f"{b['t']}-{len(b)}")
def test_splice_is_byte_for_byte_the_full_encode(body: dict, seq: int) -> None:
    want_mp = encode_raw({**body, "seq": seq}, True)
    want_js = encode_raw({**body, "seq": seq}, False)
    assert with_seq(encode_raw(body, True), seq) == want_mp
    assert with_seq(encode_raw(body, False), seq) == want_js
    assert msgpack.unpackb(want_mp)["seq"] == seq
    # the outbox's form: the prefix once per body and encoding, the tail per receiver
    assert seq_prefix(encode_raw(body, True), True) + seq_tail(seq, True) == want_mp
    assert seq_prefix(encode_raw(body, False).encode(), False) + seq_tail(seq, False) == want_js.encode()


def test_map32_header_is_bumped() -> None:
    body = {"t": "huge", **{f"k{i}": 0 for i in range(70_000)}}
    assert with_seq(encode_raw(body, True), 5) == encode_raw({**body, "seq": 5}, True)


def test_map16_at_its_limit_becomes_map32() -> None:
    body = {"t": "full", **{f"k{i}": 0 for i in range(65_534)}}   # 65535 entries
    assert with_seq(encode_raw(body, True), 5) == encode_raw({**body, "seq": 5}, True)


def test_pack_uint_is_msgpacks_smallest_form() -> None:
    for n in [0, *SEQS]:
        assert pack_uint(n) == msgpack.packb(n)


def test_not_a_map_is_refused() -> None:
    with pytest.raises(ValueError):
        with_seq(msgpack.packb([1, 2]), 1)


def test_payload_frame_is_server_frame_of_the_same_payload() -> None:
    for size in (10, 125, 126, 65_535, 65_536):
        assert payload_frame(b"x" * size, True) == server_frame(b"x" * size)
        assert payload_frame(b"y" * size, False) == server_frame("y" * size)
