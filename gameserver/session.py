"""A player's connection (``Link``) and logical session (``Session``).

``Link`` is one websocket: the encoding chosen by the first frame, the rate limiter, the out queue and the
writer task. ``Session`` is what ``resume`` gets back: session id, character, room membership. A session
outlives its link for the reconnect grace period and can be re-attached to a new link.

Write path guarantees:
- a frame is written synchronously (never awaited) when the socket is not backed up and nothing is queued,
  so the tick never waits for a socket;
- otherwise reliable frames queue in order (overflow closes the link with 1008) and ticks coalesce;
- the per-link writer task sends queued items one at a time, waiting for the socket to drain between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from shared.codec import compact_tick, encode_raw

from .errors import RoomBusy, wire_error
from .logs import event
from .outqueue import Frame, OutQueue, QueueOverflow
from .ratelimit import TokenBucket
from .replay import UNSEQUENCED, ReplayBuffer, ReplayLimits, replay_frame
from .seqwire import with_seq

if TYPE_CHECKING:
    from .characters import Character
    from .config import LimitsConfig
    from .metrics import Metrics
    from .rooms.runner import RoomRunner

log = logging.getLogger("gameserver.session")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

BYE_CLOSE_CODES = {
    "replaced": CLOSE_NORMAL, "shutdown": CLOSE_GOING_AWAY, "idle": CLOSE_NORMAL,
    "rate_limited": CLOSE_POLICY, "too_large": CLOSE_TOO_BIG,
}


class Sink(Protocol):
    """What the transport gives a link: a synchronous write path plus flow control."""

    def send(self, frame: Frame) -> None: ...
    def send_wire(self, wire: bytes) -> None: ...   # already serialised websocket frame(s), see wsframe
    def backed_up(self) -> bool: ...
    def write_now(self, wire: bytes) -> bool: ...   # send_wire unless backed_up (then False, not written)
    async def drain(self) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    @property
    def is_open(self) -> bool: ...


class Link:
    """One websocket connection of a player."""

    def __init__(self, sink: Sink, limits: LimitsConfig, metrics: Metrics, now: float,
                 on_closed: Callable[[Link, str], Awaitable[None]] | None = None) -> None:
        self.sink = sink
        self._write_now = sink.write_now   # bound once: send_now runs for every receiver of every tick
        self.metrics = metrics
        self.binary: bool | None = None   # decided by the first frame
        self.compact = False               # ticks with integer positions in tenths (login tick_format)
        self.last_frame = now              # monotonic time of the last frame received (idle timeout)
        self.bucket = TokenBucket(limits.rate_per_sec, limits.rate_burst, now,
                                  kick_after=limits.rate_kick_after)
        self.out = OutQueue(limits.reliable_queue)
        self.session: Session | None = None
        self.closing = False
        self.close_reason = ""
        self.on_closing: Callable[[], None] | None = None   # the read loop's wake-up (transport)
        self._writer: asyncio.Task[None] | None = None
        self._close_code = CLOSE_NORMAL

    # -- sending -----------------------------------------------------------------------------------
    @property
    def direct_ok(self) -> bool:
        """True when a frame may be written right now (open, nothing queued, socket not backed up)."""
        return not self.closing and not self.out and not self.sink.backed_up()

    def send_now(self, wire: bytes) -> bool:
        """Write serialised frames now if ``direct_ok`` (inlined: the tick's hot loop); False: not written,
        the caller queues instead."""
        out = self.out
        if self.closing or out.reliable or out.tick is not None:
            return False
        return self._write_now(wire)

    def encode(self, body: dict[str, Any]) -> Frame:
        return encode_raw(body, self.binary is not False)

    def send(self, body: dict[str, Any]) -> None:
        """Encode and send one reliable message (reply, chat, xp, hit, level_up, bye)."""
        self.send_frame(self.encode(body), body["t"])

    def send_frame(self, frame: Frame, t: str) -> None:
        """Send an already encoded reliable frame; never dropped, overflow disconnects."""
        if self.closing and t != "bye":
            return
        self.metrics.msg_out(t).inc()
        self.metrics.bytes_out.inc(len(frame))
        if self.direct_ok:
            self.sink.send(frame)
            return
        try:
            self.out.push_reliable(frame)
        except QueueOverflow:
            self.metrics.queue_drops.labels("reliable_overflow").inc()
            self.abort("reliable_overflow", CLOSE_POLICY)
            return
        self._wake_writer()

    def queue_tick(self, body: dict[str, Any], n: int, ts: float) -> None:
        """Coalesce a tick for a backed-up link (the runner sends directly otherwise)."""
        if self.closing:
            return
        if self.out.tick is not None:
            self.metrics.coalesced_ticks.inc()
        self.out.push_tick(body, n, ts)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        try:
            while self.out and self.sink.is_open:
                await self.sink.drain()
                item = self.out.pop()
                if item is None:
                    break
                if isinstance(item, dict):
                    frame = self.encode(compact_tick(item) if self.compact else item)
                    self.metrics.msg_out("tick").inc()
                    self.metrics.bytes_out.inc(len(frame))
                    item = frame
                self.sink.send(item)
        except Exception:  # socket died under us: the read loop notices and cleans up
            event(log, "writer_failed", level=logging.DEBUG, exc_info=True)
        if self.closing:
            self.sink.close(self._close_code, self.close_reason)

    # -- closing -----------------------------------------------------------------------------------
    def bye(self, reason: str) -> None:
        """Send ``bye`` (after anything already queued) and close the socket."""
        if self.closing:
            return
        self.send({"t": "bye", "reason": reason})
        self.closing = True
        self.close_reason = reason
        self._close_code = BYE_CLOSE_CODES.get(reason, CLOSE_NORMAL)
        self.metrics.disconnects.labels(reason).inc()
        if not self.out:
            self.sink.close(self._close_code, reason)
        # else the writer closes once the bye is out
        if self.on_closing is not None:
            self.on_closing()

    def abort(self, reason: str, code: int) -> None:
        """Close without a bye (the queue is full, nothing more can be said)."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        self._close_code = code
        self.out = OutQueue(self.out.max_reliable)
        self.metrics.disconnects.labels(reason).inc()
        event(log, "link_aborted", level=logging.WARNING, reason=reason, code=code,
              session=self.session.id if self.session else None)
        self.sink.close(code, reason)
        if self.on_closing is not None:
            self.on_closing()

    async def wait_flushed(self, limit: float) -> None:
        """Give the writer up to ``limit`` seconds to send what is queued (a bye before closing)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait([writer], timeout=limit)

    def cancel_writer(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()


class Session:
    """A logged-in character's session; survives a dropped socket for the grace period.

    Every message to the session that carries ``seq`` is numbered by ``stamp``, the one place that does
    (``send`` for replies and notices, ``gameserver.outbox`` for a room's messages), and kept in
    ``replay`` so a ``resume`` can send what the client missed. Between a resume with ``seq`` and its
    ``joined``, ``held`` is that seq: numbered messages are kept but not written, and ``release`` writes
    them all after the ``joined`` in order, so the client sees welcome, joined, replay, live.
    """

    __slots__ = ("character", "deferred", "ended", "grace_task", "held", "held_since", "id", "link", "pid",
                 "placing", "placing_count", "replay", "runner", "seats", "target")

    MAX_DEFERRED = 256   # inputs held back behind a pending join; the rate limit keeps this far away
    MAX_HOLD = 5.0       # seconds a resume holds messages for its joined (one tick, normally); then they go

    def __init__(self, session_id: str, character: Character, replay: ReplayBuffer | None = None) -> None:
        self.id = session_id
        self.character = character
        self.replay = replay if replay is not None else ReplayBuffer(ReplayLimits())
        self.held: int | None = None
        self.held_since = 0.0
        self.link: Link | None = None
        self.runner: RoomRunner | None = None   # room the player is in now
        self.target: RoomRunner | None = None   # room it will be in once queued inputs are applied
        self.pid: int | None = None
        self.grace_task: asyncio.Task[None] | None = None
        self.ended = False                      # replaced or expired: queued inputs are ignored
        # A join queued in one room and inputs aimed at another must apply in the order sent: inputs for
        # another room wait here until the pending join has been applied (see ``submit``/``placed``).
        self.placing: RoomRunner | None = None
        self.placing_count = 0
        self.deferred: list[tuple[RoomRunner, str, Any, int | None]] = []   # short: a list, not a deque
        self.seats: set[str] = set()           # instances (of rooms with max_players) it holds a seat in

    @property
    def name(self) -> str:
        return self.character.name

    def submit(self, runner: RoomRunner, kind: str, arg: Any = None, rid: int | None = None) -> None:
        """Queue a room input, keeping the session's order across rooms.

        Rooms tick independently, so ``join forest`` sent right after a login placed the player in
        ``town`` could otherwise be applied before the town placement. Inputs for another room than
        the one with a pending join are held until that join is applied. Raises ``RoomBusy`` when a
        room's queue (or this session's hold-back queue) is full.
        """
        if self.deferred or (self.placing is not None and self.placing is not runner):
            if len(self.deferred) >= self.MAX_DEFERRED:
                raise RoomBusy("too many inputs waiting for a room change")
            self.deferred.append((runner, kind, arg, rid))
        else:
            runner.submit(kind, self, arg, rid)
            if kind == "join":
                self.placing = runner
                self.placing_count += 1
        if kind == "join":
            self.target = runner
        elif kind == "leave":
            self.target = None

    def forget_inputs(self) -> None:
        """The session leaves this node's rooms (hand-off): nothing queued for it is waited for."""
        self.target = None
        self.placing = None
        self.placing_count = 0
        self.deferred.clear()

    def placed(self, runner: RoomRunner) -> None:
        """A queued join of ``runner`` was applied (or dropped): release inputs held behind it."""
        if self.placing is not runner:
            return
        self.placing_count -= 1
        if self.placing_count > 0:
            return
        self.placing = None
        held, self.deferred = self.deferred, []
        for target, kind, arg, rid in held:
            if self.placing is not None or self.deferred:
                self.deferred.append((target, kind, arg, rid))
                continue
            try:
                self.submit(target, kind, arg, rid)
            except RoomBusy as exc:   # answered like a direct submit would be
                self.send(wire_error(exc, rid))

    # -- numbered messages -----------------------------------------------------------------------------
    def stamp(self, body: dict[str, Any], size: int, now: float) -> int | None:
        """The next ``seq`` for ``body`` (``size``: its encoded bytes), kept for replay; None once the
        session ended or left this node (another node numbers from where the hand-off stopped)."""
        if self.ended:
            return None
        if self.held is not None and now - self.held_since > self.MAX_HOLD:
            self.release()   # the joined never came (room stopped?): do not keep holding, in order
        return self.replay.stamp(body, size, now)

    def send(self, body: dict[str, Any]) -> None:
        """Reliable send to the current link, numbered unless ``t`` is one of ``UNSEQUENCED``; kept for
        a resume (and not written) while detached or held."""
        link = self.link
        if body["t"] in UNSEQUENCED:
            if link is not None:
                link.send(body)
            return
        frame = encode_raw(body, link is None or link.binary is not False)
        seq = self.stamp(body, len(frame), time.monotonic())
        if seq is None or link is None or self.held is not None:
            return
        if "seq" in body:   # a room type's own ``seq`` field: ours wins, like ``{**body, "seq": seq}``
            frame = encode_raw({**body, "seq": seq}, link.binary is not False)
        else:
            frame = with_seq(frame, seq)
        link.send_frame(frame, body["t"])

    def hold(self, seq: int) -> None:
        """A resume told ``seq`` (the last one the client has, or the last one sent when that cannot be
        recovered): keep numbered messages back until ``release``, and everything after ``seq``."""
        self.held = seq
        self.held_since = time.monotonic()
        self.replay.pin(seq)

    def unhold(self) -> None:
        """The socket dropped again before the release: everything stays kept for the next resume."""
        self.held = None
        self.replay.pin(None)

    def take_held(self, now: float) -> list[tuple[int, dict[str, Any]]]:
        """End the hold: (seq, body) of every kept message after the held seq, to write now in order."""
        seq = self.held
        if seq is None:
            return []
        held = self.replay.since(seq, now) or []   # read before unpinning: the bounds apply again after
        self.unhold()
        return held

    def release(self) -> None:
        """End the hold outside a room's flush (no ``joined`` is coming): write the held messages now."""
        link = self.link
        held = self.take_held(time.monotonic())
        if link is None:
            return
        binary = link.binary is not False
        for seq, body in held:
            link.send_frame(replay_frame(body, seq, binary), body["t"])
        if held:
            link.metrics.replayed.inc(len(held))
