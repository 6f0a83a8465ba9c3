"""A room's send path: what one tick says to whom, written with one socket write per receiver.

During a tick the runner queues here every message the room sends: personal ones (replies, ``send``),
room-wide ones (``broadcast``, chat, ``level_up``) and ``tick`` groups. ``flush`` then encodes each body
once per encoding, however many receive it, frames it once (``gameserver.wsframe``) and gives every
receiver its reliable messages in the order they were queued, followed by its tick, in ONE socket write.
A receiver whose socket is backed up gets the same messages through its out queue instead (reliable ones in
order, never dropped; ticks merged into one). A session without a socket (dropped, within its grace) gets
nothing. Outside a tick every queued message is written at once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from shared.codec import compact_tick, encode_raw

from .wsframe import server_frame

if TYPE_CHECKING:
    from .metrics import Metrics
    from .session import Link, Session

Frame = bytes | str


class _Encoded:
    """One body, encoded and framed lazily, once per encoding."""

    __slots__ = ("body", "frames", "sent", "wires")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.frames: dict[bool, Frame] = {}
        self.wires: dict[bool, bytes] = {}
        self.sent = [0, 0]       # receivers written directly, by encoding (JSON, msgpack): metrics

    def frame(self, binary: bool) -> Frame:
        found = self.frames.get(binary)
        if found is None:
            found = self.frames[binary] = encode_raw(self.body, binary)
        return found

    def wire(self, binary: bool) -> bytes:
        found = self.wires.get(binary)
        if found is None:
            found = self.wires[binary] = server_frame(self.frame(binary))
        return found


class Outbox:
    """The messages of one room's current tick, until ``flush``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.buffering = False   # True while a tick runs: messages wait for its flush
        self._reliable: list[tuple[_Encoded, Session | None, list[Session] | None]] = []
        self._ticks: list[tuple[list[Session], dict[str, Any]]] = []
        self._m_tick = metrics.msg_out("tick")

    def personal(self, session: Session, body: dict[str, Any]) -> None:
        """A reliable message for one session."""
        self._reliable.append((_Encoded(body), session, None))
        if not self.buffering:
            self.flush(0)

    def room(self, body: dict[str, Any], receivers: list[Session]) -> None:
        """A reliable message for several sessions (``receivers`` is kept: pass a fresh list)."""
        if receivers:
            self._reliable.append((_Encoded(body), None, receivers))
            if not self.buffering:
                self.flush(0)

    def tick(self, receivers: list[Session], body: dict[str, Any]) -> None:
        """A tick body (without ``t``/``n``/``ts``) for a group; coalesced for backed-up receivers."""
        if receivers:
            self._ticks.append((receivers, body))

    @staticmethod
    def reset(session: Session) -> None:
        """The session changes room: tick state merged for it so far must not follow its ``joined``."""
        link = session.link
        if link is not None:
            link.out.reset_tick()

    def flush(self, n: int) -> None:
        """Write everything queued (``n``: this tick's number, for the ``tick`` messages)."""
        reliable, ticks = self._reliable, self._ticks
        if not reliable and not ticks:
            return
        self._reliable, self._ticks = [], []
        owed: dict[Session, list[_Encoded]] = defaultdict(list)
        for enc, one, many in reliable:
            if one is not None:
                owed[one].append(enc)
            else:
                for session in many:   # type: ignore[union-attr]
                    owed[session].append(enc)
        joined_wires: dict[tuple[tuple[int, ...], bool], bytes] = {}
        sent = sent_bytes = 0
        if ticks:
            stamp = time.time()
            for receivers, body in ticks:
                plain = _Encoded({"t": "tick", "n": n, "ts": stamp, **body})
                small: _Encoded | None = None   # the compact form, made for the first receiver asking
                for session in receivers:
                    link = session.link
                    if link is None:
                        continue
                    mine = owed.pop(session, None)
                    binary = link.binary is not False
                    if not link.direct_ok:
                        if mine:
                            _queue(link, mine, binary)
                        link.queue_tick(body, n, stamp)
                        continue
                    if link.compact:
                        if small is None:
                            small = _Encoded(compact_tick(plain.body))
                        wire = small.wire(binary)
                    else:
                        wire = plain.wire(binary)
                    sent += 1
                    sent_bytes += len(wire)
                    if mine:
                        link.sink.send_wire(_joined(mine, binary, joined_wires) + wire)
                    else:
                        link.sink.send_wire(wire)
        for session, mine in owed.items():   # reliable messages of receivers that got no tick
            link = session.link
            if link is None:
                continue
            binary = link.binary is not False
            if link.direct_ok:
                link.sink.send_wire(_joined(mine, binary, joined_wires))
            else:
                _queue(link, mine, binary)
        metrics = self.metrics
        if sent:
            self._m_tick.inc(sent)
            metrics.bytes_out.inc(sent_bytes)
        for enc, _one, _many in reliable:
            text, binary = enc.sent
            if text or binary:
                metrics.msg_out(enc.body["t"]).inc(text + binary)
                metrics.bytes_out.inc(sum(count * len(enc.wires[b])
                                          for b, count in ((False, text), (True, binary)) if count))


def _joined(mine: list[_Encoded], binary: bool, cache: dict[tuple[tuple[int, ...], bool], bytes]) -> bytes:
    """The frames of ``mine`` back to back (cached: most receivers of a tick get the same ones)."""
    for enc in mine:
        enc.sent[binary] += 1
    if len(mine) == 1:
        return mine[0].wire(binary)
    key = (tuple(id(e) for e in mine), binary)
    found = cache.get(key)
    if found is None:
        found = cache[key] = b"".join(enc.wire(binary) for enc in mine)
    return found


def _queue(link: Link, mine: list[_Encoded], binary: bool) -> None:
    """A backed-up receiver: its reliable messages through its out queue (counted by ``send_frame``)."""
    for enc in mine:
        link.send_frame(enc.frame(binary), enc.body["t"])
