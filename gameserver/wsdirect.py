"""A websockets ``ServerConnection`` that hands whole binary messages straight to a callback.

Why: websockets queues every message in an ``Assembler`` and wakes the connection's task to ``recv`` it:
a queue put, a task wake-up and three coroutine resumptions per frame, ~10 % of the server's time at 500
walkers sending 10 moves/s each (py-spy). Game clients send small single-frame binary messages, so once
``direct`` is set, such a frame goes from the protocol parser to ``direct(data)`` in the same callback.

Everything else keeps websockets' path, unchanged: handshake, control frames (ping, pong, close), size
limits (checked by the parser before ``process_event``). A text frame (JSON clients: UTF-8 must be checked)
or a fragmented message turns direct delivery off for good on that connection (``fell_back``) and goes to
the Assembler, read with ``recv`` as before; the owner is woken through ``wake`` to switch. The owner must
only set ``direct`` while the Assembler is empty, so no message can overtake one queued there.

Leans on websockets 17's ``process_event`` and ``recv_messages`` (pinned in pyproject).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class DirectConnection(ServerConnection):
    """``ServerConnection`` with an optional direct path for whole binary messages (module docstring)."""

    direct: Callable[[bytes], None] | None
    fell_back: bool
    wake: asyncio.Future[None] | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)   # type: ignore[arg-type]
        self.direct = None
        self.fell_back = False
        self.wake = None

    def queued(self) -> int:
        """Frames waiting in websockets' Assembler (``direct`` may only be set while this is 0)."""
        return len(self.recv_messages.frames)

    def process_event(self, event: object) -> None:
        direct = self.direct
        if direct is not None and isinstance(event, Frame) and event.opcode in _DATA:
            if event.opcode is Opcode.BINARY and event.fin:
                data = event.data
                direct(data if type(data) is bytes else bytes(data))
                return
            self.direct = None   # text or a fragment: websockets' path from now on
            self.fell_back = True
            self._wake()
        super().process_event(event)   # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def wake_up(self) -> None:
        """Wake the owner waiting on ``wake`` (e.g. its link is closing)."""
        self._wake()

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)
