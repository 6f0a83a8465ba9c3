"""A websockets ``ServerConnection`` that hands whole binary messages straight to a callback.

Why: for every client frame websockets runs its generator-based parser (reader buffer, ``Frame.parse``,
``recv_frame``, an events list), queues the message in an ``Assembler`` and wakes the connection's task to
``recv`` it: about a third of the server's input cost at 500 walkers sending 10 moves/s each (py-spy).
Game clients send small single-frame binary messages, so once ``direct`` is set, ``data_received`` splits
such frames off each read itself (header, length, unmask with websockets' C ``apply_mask``) and calls
``direct(payload)`` in the same callback.

Everything else keeps websockets' path, unchanged: handshake, control frames (ping, pong, close), frames
split across reads, size limits, protocol errors. Frames its parser completes still reach ``direct``
(``process_event``). A text frame (JSON clients: UTF-8 must be checked) or a fragmented message turns
direct delivery off for good on that connection (``fell_back``) and goes to the Assembler, read with
``recv`` as before; the owner is woken through ``wake`` to switch. The owner must only set ``direct`` while
the Assembler is empty, so no message can overtake one queued there.

Leans on websockets 17's ``process_event``, ``recv_messages`` and the Sans-I/O protocol's ``reader``,
``current_size`` and ``max_message_size`` (pinned in pyproject).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode, apply_mask
from websockets.protocol import State

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
_BINARY_FIN = 0x82   # first header byte of a whole binary message: FIN, no RSV bits, opcode 2
_MASKED = 0x80


class DirectConnection(ServerConnection):
    """``ServerConnection`` with an optional direct path for whole binary messages (module docstring)."""

    direct: Callable[[bytes], None] | None
    fell_back: bool
    split: int
    wake: asyncio.Future[None] | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)   # type: ignore[arg-type]
        self.direct = None
        self.fell_back = False
        self.wake = None
        self.split = 0   # frames data_received split off itself (not through websockets' parser)

    def queued(self) -> int:
        """Frames waiting in websockets' Assembler (``direct`` may only be set while this is 0)."""
        return len(self.recv_messages.frames)

    def data_received(self, data: bytes) -> None:
        """Split whole masked binary frames off ``data`` and hand them to ``direct``; the rest to websockets.

        Only at a frame boundary of websockets' parser (its buffer empty, no fragmented message open, the
        connection open) and only for frames it would accept unchanged (FIN, no RSV bits, masked, within
        the size limit, at most 65,535 bytes). Anything else (a control frame, a text frame, a frame split
        across reads) and everything after it in ``data`` goes to websockets' parser, which keeps order:
        its own complete frames still reach ``direct`` through ``process_event``.
        """
        direct = self.direct
        protocol = self.protocol
        if direct is None or protocol.reader.buffer or protocol.current_size is not None \
                or protocol.state is not State.OPEN:
            super().data_received(data)
            return
        limit = protocol.max_message_size or 65535
        pos = 0
        end = len(data)
        while end - pos >= 6 and data[pos] == _BINARY_FIN:
            size = data[pos + 1]
            if not size & _MASKED:
                break
            size &= 0x7F
            head = pos + 6
            if size == 126:
                head = pos + 8   # its two length bytes are within the 6 checked above
                size = (data[pos + 2] << 8) | data[pos + 3]
            elif size == 127:
                break
            stop = head + size
            if size > limit or stop > end:
                break
            payload = apply_mask(data[head:stop], data[head - 4:head])
            pos = stop
            self.split += 1
            direct(payload)   # a link closing meanwhile drops the rest itself (link.closing)
        if pos < end:
            super().data_received(data[pos:] if pos else data)

    def process_event(self, event: object) -> None:
        direct = self.direct
        if direct is not None and isinstance(event, Frame) and event.opcode in _DATA:
            if event.opcode is Opcode.BINARY and event.fin:
                data = event.data
                direct(data if type(data) is bytes else bytes(data))
                return
            self.direct = None   # text or a fragment: websockets' path from now on
            self.fell_back = True
            self.wake_up()
        super().process_event(event)   # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.wake_up()

    def wake_up(self) -> None:
        """Wake the owner waiting on ``wake`` (its link is closing, the connection lost or fallen back)."""
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)
