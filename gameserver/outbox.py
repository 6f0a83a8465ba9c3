"""A room's send path: what one tick says to whom, written with one socket write per receiver.

During a tick the runner queues here every message the room sends: personal ones (replies, ``send``),
room-wide ones (``broadcast``, chat, ``level_up``) and ``tick`` groups. ``flush`` then encodes each body
once per encoding, however many receive it, and gives every receiver its reliable messages in the order
they were queued, followed by its tick, in ONE socket write. A receiver whose socket is backed up gets the
same messages through its out queue instead (reliable ones in order, never dropped; ticks merged into one).
Outside a tick every queued message is written at once.

Numbering: each receiver's messages get its own ``seq`` at flush, in the order they are written
(``Session.stamp``), spliced into the bytes encoded once for everyone (``gameserver.seqwire``) rather than
encoded again per receiver. A session without a socket (dropped, within its grace) or held by a resume
gets nothing written, but its messages are numbered and kept all the same, for the replay; ``release``
marks where a resumed session's held messages go out (after its ``joined``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from shared.codec import compact_tick, encode_raw

from .replay import UNSEQUENCED, replay_frame
from .seqwire import seq_prefix, seq_tail, with_seq
from .wsframe import payload_frame, server_frame

if TYPE_CHECKING:
    from .metrics import Metrics
    from .session import Link, Session

Frame = bytes | str


class _Encoded:
    """One body, encoded and framed lazily, once per encoding; numbered copies spliced per receiver."""

    __slots__ = ("_compact", "_size", "body", "frames", "numbered", "prefixes", "sent", "sent_bytes", "wires")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.numbered = body["t"] not in UNSEQUENCED
        self.frames: dict[bool, Frame] = {}
        self.prefixes: dict[bool, bytes] = {}   # the numbered encoding up to the seq value (seqwire)
        self.wires: dict[bool, bytes] = {}
        self._size = 0
        self.sent = 0            # receivers written directly: metrics
        self.sent_bytes = 0
        self._compact: _Encoded | None = None

    def compact(self) -> _Encoded:
        """This tick in the compact encoding (made for the first receiver asking, shared by the others)."""
        if self._compact is None:
            self._compact = _Encoded(compact_tick(self.body))
        return self._compact

    def frame(self, binary: bool) -> Frame:
        found = self.frames.get(binary)
        if found is None:
            found = self.frames[binary] = encode_raw(self.body, binary)
        return found

    def size(self) -> int:
        """Encoded bytes, for the replay buffer's byte bound (whichever encoding was made first)."""
        if not self._size:
            frames = self.frames
            self._size = len(next(iter(frames.values())) if frames else self.frame(True))
        return self._size

    def wire(self, binary: bool) -> bytes:
        """The whole websocket frame, for receivers that get it without ``seq``."""
        found = self.wires.get(binary)
        if found is None:
            found = self.wires[binary] = server_frame(self.frame(binary))
        return found

    def numbered_wire(self, binary: bool, seq: int) -> bytes:
        """The websocket frame of this body with ``seq``: the number appended to the prefix encoded once."""
        prefix = self.prefixes.get(binary)
        if prefix is None:
            if "seq" in self.body:   # a room type's own seq field: ours replaces it, encoded in full
                return server_frame(encode_raw({**self.body, "seq": seq}, binary))
            frame = self.frame(binary)
            prefix = self.prefixes[binary] = seq_prefix(frame.encode() if isinstance(frame, str) else frame,
                                                        binary)
        return payload_frame(prefix + seq_tail(seq, binary), binary)

    def numbered_frame(self, binary: bool, seq: int) -> Frame:
        """The message frame with ``seq``, for a receiver's out queue."""
        if "seq" in self.body:
            return encode_raw({**self.body, "seq": seq}, binary)
        return with_seq(self.frame(binary), seq)


_RELEASE = None   # a queued entry that is not a message: the point where a resumed session's hold ends


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

    def release(self, session: Session) -> None:
        """A join or snapshot of ``session`` was applied: if a resume holds its messages back, they go
        out here, after what was queued for it before (its ``joined``)."""
        if session.held is not None:
            self._reliable.append((_RELEASE, session, None))
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
        owed: dict[Session, list[_Encoded | None]] = defaultdict(list)
        for enc, one, many in reliable:
            if one is not None:
                owed[one].append(enc)
            else:
                for session in many:   # type: ignore[union-attr]
                    owed[session].append(enc)
        now = time.monotonic() if owed else 0.0
        sent = sent_bytes = 0   # ticks written
        if ticks:
            stamp = time.time()
            for receivers, body in ticks:
                plain = _Encoded({"t": "tick", "n": n, "ts": stamp, **body})
                plain_bin = b""   # what nearly every receiver gets: encoded for the first of them
                direct = 0
                for session in receivers:   # the hot loop: every receiver of every tick
                    link = session.link
                    mine = owed.pop(session, None) if owed else None
                    if link is None:
                        if mine:
                            self._keep(session, mine, now)
                        continue
                    if mine or link.compact or link.binary is False:
                        self._tick_with(session, link, mine, plain, body, n, stamp, now)
                        continue
                    if not plain_bin:
                        plain_bin = plain.wire(True)
                    if link.send_now(plain_bin):
                        direct += 1
                    else:
                        link.queue_tick(body, n, stamp)
                sent += direct + plain.sent
                sent_bytes += direct * len(plain_bin) + plain.sent_bytes
        for session, mine in owed.items():   # reliable messages of receivers that got no tick
            link = session.link
            if link is None:
                self._keep(session, mine, now)
                continue
            binary = link.binary is not False
            if link.direct_ok:
                wire = self._wire(session, mine, binary, now)
                if wire:
                    link.sink.send_wire(wire)
            else:
                self._queue(session, link, mine, binary, now)
        metrics = self.metrics
        if sent:
            self._m_tick.inc(sent)
            metrics.bytes_out.inc(sent_bytes)
        for enc, _one, _many in reliable:
            if enc is not None and enc.sent:
                metrics.msg_out(enc.body["t"]).inc(enc.sent)
                metrics.bytes_out.inc(enc.sent_bytes)

    def _tick_with(self, session: Session, link: Link, mine: list[_Encoded | None] | None, plain: _Encoded,
                   body: dict[str, Any], n: int, stamp: float, now: float) -> None:
        """One receiver's tick off the common path: reliable messages owed first, or a compact or JSON
        tick (counted in ``plain.sent``), or queued behind a backlog."""
        binary = link.binary is not False
        if not link.direct_ok:
            if mine:
                self._queue(session, link, mine, binary, now)
            link.queue_tick(body, n, stamp)
            return
        wire = (plain.compact() if link.compact else plain).wire(binary)
        plain.sent += 1
        plain.sent_bytes += len(wire)
        link.sink.send_wire(self._wire(session, mine, binary, now) + wire if mine else wire)

    @staticmethod
    def _keep(session: Session, mine: list[_Encoded | None], now: float) -> None:
        """A receiver without a socket: its messages are numbered and kept for its resume."""
        for enc in mine:
            if enc is not None and enc.numbered:
                session.stamp(enc.body, enc.size(), now)

    def _wire(self, session: Session, mine: list[_Encoded | None], binary: bool, now: float) -> bytes:
        """The websocket frames of ``mine`` for one receiver, back to back, each numbered one with the
        receiver's next seq (nothing numbered is written while a resume holds the session)."""
        parts: list[bytes] = []
        for enc in mine:
            if enc is None:
                replayed = [server_frame(replay_frame(body, seq, binary))
                            for seq, body in self._released(session, now)]
                self.metrics.bytes_out.inc(sum(map(len, replayed)))
                parts.extend(replayed)
                continue
            if not enc.numbered:
                wire = enc.wire(binary)
            else:
                seq = session.stamp(enc.body, enc.size(), now)
                if seq is None or session.held is not None:
                    continue
                wire = enc.numbered_wire(binary, seq)
            enc.sent += 1
            enc.sent_bytes += len(wire)
            parts.append(wire)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _queue(self, session: Session, link: Link, mine: list[_Encoded | None], binary: bool,
               now: float) -> None:
        """A backed-up receiver: its messages through its out queue (counted by ``send_frame``)."""
        for enc in mine:
            if enc is None:
                for seq, body in self._released(session, now):
                    link.send_frame(replay_frame(body, seq, binary), body["t"])
                continue
            if not enc.numbered:
                link.send_frame(enc.frame(binary), enc.body["t"])
                continue
            seq = session.stamp(enc.body, enc.size(), now)
            if seq is not None and session.held is None:
                link.send_frame(enc.numbered_frame(binary, seq), enc.body["t"])

    def _released(self, session: Session, now: float) -> list[tuple[int, dict[str, Any]]]:
        held = session.take_held(now)
        if held:
            self.metrics.replayed.inc(len(held))
            for _seq, body in held:
                self.metrics.msg_out(body["t"]).inc()
        return held

