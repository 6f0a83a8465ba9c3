"""Serialise a whole websocket data frame once, to write the same bytes to many connections.

Why: sending is the server's hot path (a tick goes to every player 20 times a second). websockets'
``broadcast`` serialises the frame again for every connection; with compression off and no extensions, a
server frame is just a 2-10 byte header (FIN + opcode, unmasked length) in front of the payload, so the
room runner builds it once per delivery group and the transport writes it to each connection as is.
The result is byte-for-byte what websockets would send (``tests/gameserver/test_wsframe.py``).
"""

from __future__ import annotations

import struct

OP_TEXT = 0x81     # FIN + text
OP_BINARY = 0x82   # FIN + binary


def server_frame(message: bytes | str) -> bytes:
    """The wire bytes of one unfragmented, unmasked frame: text for ``str``, binary for ``bytes``."""
    if isinstance(message, str):
        return payload_frame(message.encode(), False)
    return payload_frame(bytes(message), True)


def payload_frame(data: bytes, binary: bool) -> bytes:
    """``server_frame`` of a payload given as bytes (UTF-8 JSON when not ``binary``)."""
    first = OP_BINARY if binary else OP_TEXT
    n = len(data)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + data
