"""Log frame format: pure encode/decode, no I/O.

A frame is ``MAGIC (1 byte) | length (u32 LE) | checksum (u64 LE) | body``; the checksum is
xxh3_64 of the body seeded with the length, so a damaged length is caught too. The body is a msgpack
array ``[kind, namespace, set, user_key, digest, generation, expires_at, packed_bins]``; ``packed_bins``
is itself msgpack bytes, kept packed in memory until a record is first read. A tombstone
(``kind == DEL``) has ``packed_bins = None``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import xxhash

MAGIC = 0xD5
MAGIC_BYTE = bytes([MAGIC])
HEADER = struct.Struct("<BIQ")
HEADER_SIZE = HEADER.size  # 13
MAX_BODY = 1 << 30
PUT, DEL = 1, 2

_checksum = xxhash.xxh3_64_intdigest
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
pack = _packer.pack
unpack = msgpack.unpackb


def encode(body: bytes) -> bytes:
    """Wrap a packed body into a frame."""
    n = len(body)
    return _pack_header(MAGIC, n, _checksum(body, n)) + body


def encode_put(ns: str, set_name: str, user_key: Any, digest: bytes, gen: int, exp: float | None,
               packed_bins: bytes) -> bytes:
    """Frame of a record version."""
    body = pack([PUT, ns, set_name, user_key, digest, gen, exp, packed_bins])
    n = len(body)
    return _pack_header(MAGIC, n, _checksum(body, n)) + body


def encode_del(ns: str, set_name: str, user_key: Any, digest: bytes, gen: int) -> bytes:
    """Frame of a tombstone (the record is deleted from here on)."""
    body = pack([DEL, ns, set_name, user_key, digest, gen, None, None])
    n = len(body)
    return _pack_header(MAGIC, n, _checksum(body, n)) + body


def check_at(data: bytes | memoryview, pos: int, end: int) -> int:
    """Length of the valid frame starting at pos (header + body), or -1 if there is none."""
    if end - pos < HEADER_SIZE:
        return -1
    magic, n, csum = _unpack_header(data, pos)
    if magic != MAGIC or n > end - pos - HEADER_SIZE:
        return -1
    start = pos + HEADER_SIZE
    if _checksum(data[start : start + n], n) != csum:
        return -1
    return HEADER_SIZE + n


def resync(data: bytes, pos: int, end: int) -> int:
    """Offset of the next valid frame after pos, or -1 if none (used by repair and tail classification)."""
    p = data.find(MAGIC_BYTE, pos + 1, end)
    while p != -1:
        if check_at(data, p, end) > 0:
            return p
        p = data.find(MAGIC_BYTE, p + 1, end)
    return -1


def iter_frames(data: bytes, pos: int = 0) -> Iterator[tuple[int, int, list[Any]]]:
    """Yield (offset, frame_size, body_fields) for consecutive valid frames; stops at the first bad one.

    After exhaustion, compare the last offset + size with len(data) to find where (if) it stopped early.
    """
    end = len(data)
    mv = memoryview(data)
    while pos < end:
        if end - pos < HEADER_SIZE:
            return
        magic, n, csum = _unpack_header(data, pos)
        start = pos + HEADER_SIZE
        if magic != MAGIC or n > end - start:
            return
        body = mv[start : start + n]
        if _checksum(body, n) != csum:
            return
        yield pos, HEADER_SIZE + n, unpack(body)
        pos = start + n
