"""Add a per-receiver ``seq`` to a message that is already encoded, without encoding it again.

Why: a room-wide message (chat, ``level_up``) is encoded once per encoding for all its receivers
(``gameserver.outbox``), but each receiver has its own ``seq``. Re-encoding the body per receiver would cost
a full msgpack/JSON encode each; appending one key to the encoded map costs a few bytes of copying:

- msgpack: bump the map header (fixmap ``0x8N`` -> ``0x8N+1``, 15 entries -> map16, map16 -> +1 or map32)
  and append ``"seq"`` and the integer packed in its smallest form, as ``msgpack.packb`` would;
- JSON (compact, as ``shared.codec`` writes it): put ``,"seq":N`` before the closing ``}``.

The result is byte for byte ``encode_raw({**body, "seq": seq})`` (``tests/gameserver/test_seqwire.py``), as
long as ``body`` has no ``seq`` of its own; callers encode in full in that case
(``outbox._Encoded.numbered_wire``).
"""

from __future__ import annotations

import struct

_U16 = struct.Struct(">H").pack
_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack


def pack_uint(n: int) -> bytes:
    """``n`` (0 to 2**64-1) packed like ``msgpack.packb`` packs a non-negative int."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0xCC, n))
    if n < 0x10000:
        return b"\xcd" + _U16(n)
    if n < 0x100000000:
        return b"\xce" + _U32(n)
    return b"\xcf" + _U64(n)


def _map_header(data: bytes) -> tuple[bytes, int]:
    """(header for one more entry, length of the old header) of a map that is not a fixmap below 15."""
    b0 = data[0]
    if b0 == 0x8F:
        return b"\xde\x00\x10", 1
    if b0 == 0xDE:
        n = (data[1] << 8 | data[2]) + 1
        return (b"\xde" + _U16(n)) if n < 0x10000 else (b"\xdf" + _U32(n)), 3
    if b0 == 0xDF:
        return b"\xdf" + _U32(int.from_bytes(data[1:5], "big") + 1), 5
    raise ValueError("not a msgpack map")


def seq_prefix(data: bytes, binary: bool) -> bytes:
    """The part of a numbered message that does not depend on the number: the encoded map (msgpack:
    header bumped for one more entry) up to and including the ``seq`` key. ``seq_prefix + seq_tail`` is the
    whole message; a room-wide message computes the prefix once and only the tail per receiver."""
    if not binary:
        return data[:-1] + b',"seq":'
    b0 = data[0]
    if 0x80 <= b0 < 0x8F:   # fixmap of up to 14 entries: every server message but the biggest
        return b"%c%b\xa3seq" % (b0 + 1, data[1:])
    header, skip = _map_header(data)
    return b"%b%b\xa3seq" % (header, data[skip:])


def seq_tail(seq: int, binary: bool) -> bytes:
    """The number itself and what closes the message (JSON's ``}``)."""
    return pack_uint(seq) if binary else b"%d}" % seq


def with_seq(frame: bytes | str, seq: int) -> bytes | str:
    """A frame as ``shared.codec.encode_raw`` returns it (msgpack bytes or JSON text) with ``seq`` added."""
    if isinstance(frame, str):
        return (seq_prefix(frame.encode(), False) + seq_tail(seq, False)).decode()
    return seq_prefix(frame, True) + seq_tail(seq, True)
