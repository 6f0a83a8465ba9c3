"""The pre-serialised frames the server writes are exactly what websockets itself would send."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from gameserver.wsframe import server_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_server_frame_matches_websockets_serialisation(size: int, text: bool) -> None:
    message: bytes | str
    if text:
        message = "é" * (size // 2) + "a" * (size % 2)   # 2-byte UTF-8: payload length != len(str)
    else:
        message = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    payload = message.encode() if isinstance(message, str) else message
    expected = Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert server_frame(message) == expected
