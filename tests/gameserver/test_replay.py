"""The replay buffer alone: numbering, the three bounds, since(), pinning, export/restore."""

from __future__ import annotations

import pytest

from gameserver.replay import ReplayBuffer, ReplayLimits

LIMITS = ReplayLimits(max_messages=4, max_bytes=1000, max_age=10.0)


def filled(n: int, size: int = 10, limits: ReplayLimits = LIMITS, now: float = 0.0) -> ReplayBuffer:
    buf = ReplayBuffer(limits)
    for i in range(n):
        assert buf.stamp({"t": "chat", "i": i}, size, now) == i + 1
    return buf


def test_since_returns_everything_after_seq_while_none_is_missing() -> None:
    buf = filled(3)
    assert buf.since(0, 0.0) == [(1, {"t": "chat", "i": 0}), (2, {"t": "chat", "i": 1}),
                                 (3, {"t": "chat", "i": 2})]
    assert buf.since(2, 0.0) == [(3, {"t": "chat", "i": 2})]
    assert buf.since(3, 0.0) == []
    assert buf.since(4, 0.0) is None          # more than was ever sent: not ours to trust


def test_count_bound_evicts_the_oldest_and_older_seqs_are_unrecoverable() -> None:
    buf = filled(6)
    assert len(buf) == 4 and buf.first == 3 and buf.last == 6
    assert buf.since(1, 0.0) is None
    assert [s for s, _ in buf.since(2, 0.0)] == [3, 4, 5, 6]


def test_byte_bound_counts_encoded_sizes() -> None:
    buf = filled(3, size=400)
    assert len(buf) == 2 and buf.first == 2
    big = ReplayBuffer(LIMITS)
    big.stamp({"t": "x"}, 5000, 0.0)               # bigger than the whole bound: not kept
    assert len(big) == 0 and big.since(0, 0.0) is None and big.since(1, 0.0) == []


def test_age_bound_evicts_old_messages() -> None:
    buf = ReplayBuffer(LIMITS)
    buf.stamp({"t": "a"}, 1, 0.0)
    buf.stamp({"t": "b"}, 1, 5.0)
    assert buf.since(0, 10.5) is None and buf.since(1, 10.5) == [(2, {"t": "b"})]


def test_keeping_nothing_still_numbers() -> None:
    buf = filled(3, limits=ReplayLimits(0, 0, 10.0))
    assert len(buf) == 0 and buf.last == 3
    assert buf.since(3, 0.0) == [] and buf.since(2, 0.0) is None


def test_pin_keeps_what_follows_the_pinned_seq_beyond_the_bounds() -> None:
    buf = filled(4)
    buf.pin(2)
    for i in range(4, 10):
        buf.stamp({"t": "chat", "i": i}, 10, 0.0)
    assert buf.first == 3 and [s for s, _ in buf.since(2, 0.0)] == list(range(3, 11))
    buf.pin(None)
    buf.stamp({"t": "chat"}, 10, 0.0)
    assert len(buf) == 4 and buf.first == 8


def test_lost_history_recovers_nothing_until_restarted_after_the_clients_seq() -> None:
    buf = ReplayBuffer(LIMITS, lost=True)
    assert buf.since(0, 0.0) is None and buf.since(17, 0.0) is None
    buf.restart(17)
    assert buf.stamp({"t": "x"}, 1, 0.0) == 18 and buf.since(17, 0.0) == [(18, {"t": "x"})]


def test_restart_never_goes_back() -> None:
    buf = filled(5)
    buf.restart(2)
    assert buf.last == 5


def test_export_restore_keeps_seqs_bodies_sizes_and_ages() -> None:
    buf = filled(3, now=100.0)
    buf.stamp({"t": "xp", "blob": b"\x00\x01", "nested": {"1": [1.5, None, True]}}, 10, 104.0)
    text = buf.export(105.0)
    assert isinstance(text, str) and text.isascii()
    other = ReplayBuffer.restore(text, LIMITS, 1000.0)     # another node's clock
    assert other.last == 4 and other.since(0, 1000.0) == buf.since(0, 105.0)
    assert other.since(0, 1005.5) is None                   # the first three were 5 s old, + 5.5 > 10
    assert ReplayBuffer.restore(text, ReplayLimits(2, 1000, 10.0), 0.0).first == 3


def test_restore_refuses_what_export_did_not_write() -> None:
    for junk in ("", "bm90IG1zZ3BhY2s=", "!!"):
        with pytest.raises(ValueError):
            ReplayBuffer.restore(junk, LIMITS, 0.0)


class Sink:
    """A socket that records what is written to it (the ``Sink`` a transport gives a ``Link``)."""

    def __init__(self) -> None:
        self.frames: list[bytes | str] = []
        self.is_open = True

    def send(self, frame: bytes | str) -> None:
        self.frames.append(frame)

    def send_wire(self, wire: bytes) -> None:
        raise AssertionError("Session.send writes frames, not wires")

    def backed_up(self) -> bool:
        return False

    def write_now(self, wire: bytes) -> bool:
        if self.backed_up():
            return False
        self.send_wire(wire)
        return True

    async def drain(self) -> None:
        return None

    def close(self, code: int, reason: str) -> None:
        self.is_open = False


def test_a_hold_whose_joined_never_comes_is_released_in_order_after_max_hold() -> None:
    import msgpack

    from gameserver.characters import Character
    from gameserver.config import LimitsConfig
    from gameserver.metrics import Metrics
    from gameserver.session import Link, Session

    sink = Sink()
    link = Link(sink, LimitsConfig(), Metrics(), 0.0)
    link.binary = True
    session = Session("s", Character(name="held", secret="x"), ReplayBuffer(LIMITS))
    session.link, link.session = link, session
    session.hold(0)
    session.send({"t": "chat", "text": "a"})             # held: kept, not written
    assert sink.frames == [] and session.held == 0
    session.held_since -= Session.MAX_HOLD + 1.0          # the joined is overdue now
    session.send({"t": "chat", "text": "b"})
    assert [(m["seq"], m["text"]) for m in map(msgpack.unpackb, sink.frames)] == [(1, "a"), (2, "b")]
    assert session.held is None
