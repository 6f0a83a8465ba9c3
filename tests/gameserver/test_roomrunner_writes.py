"""The room runner's write path: one socket write per receiver per tick, chat riding with the tick."""

from __future__ import annotations

import msgpack

from gameserver.app import GameServer
from gameserver.characters import Character
from gameserver.session import Link, Session
from shared import messages as m


class RecordingSink:
    """A sink that records each write call (what the transport would hand to the socket)."""

    def __init__(self, backed: bool = False) -> None:
        self.writes: list[bytes] = []
        self.replies: list[bytes | str] = []
        self.backed = backed

    def send(self, frame) -> None:   # direct replies (joined, hit, ...) take the ordinary path
        self.replies.append(frame)

    def send_wire(self, wire: bytes) -> None:
        self.writes.append(wire)

    def backed_up(self) -> bool:
        return self.backed

    def write_now(self, wire: bytes) -> bool:
        if self.backed_up():
            return False
        self.send_wire(wire)
        return True

    async def drain(self) -> None:   # never drains in this test
        return None

    def close(self, code, reason) -> None:
        pass

    @property
    def is_open(self) -> bool:
        return True


def frames_of(wire: bytes) -> list[dict]:
    """Split concatenated unmasked server frames (payloads < 64 KiB here) into decoded messages."""
    out, i = [], 0
    while i < len(wire):
        assert wire[i] == 0x82, "binary FIN frame"
        n, i = wire[i + 1], i + 2
        if n == 126:
            n, i = int.from_bytes(wire[i:i + 2], "big"), i + 2
        out.append(msgpack.unpackb(wire[i:i + n]))
        i += n
    return out


async def test_chats_of_a_tick_and_the_tick_go_out_in_one_write_per_receiver(make_config):
    server = GameServer(make_config())
    runner = server.runners["arena"]
    sessions = []
    for i, backed in enumerate([False, False, True]):
        sink = RecordingSink(backed)
        link = Link(sink, server.config.limits, server.metrics, 0.0)
        link.binary = True
        session = Session(f"s{i}", Character(name=f"p{i}", secret="x", room="arena", x=100.0 + i, y=100.0))
        session.link, link.session = link, session
        runner.submit("join", session, True)
        sessions.append((session, sink))
    runner.tick(1.0)
    for _s, sink in sessions:
        sink.writes.clear()
    backed_link = sessions[2][0].link
    while backed_link.out:               # what queued up while backed up before this tick (joined, tick)
        backed_link.out.pop()

    alice = sessions[0][0]
    runner.submit("message", alice, ("move", m.Move(x=110.0, y=100.0)))
    runner.submit("chat", alice, "one")
    runner.submit("chat", alice, "two")
    runner.tick(1.1)

    for session, sink in sessions[:2]:            # direct receivers: exactly one write each
        assert len(sink.writes) == 1, session.name
        msgs = frames_of(sink.writes[0])
        assert [m["t"] for m in msgs] == ["chat", "chat", "tick"]
        assert [m["text"] for m in msgs[:2]] == ["one", "two"] and msgs[0]["from"] == "p0"
        assert [m["seq"] for m in msgs[:2]] == [1, 2]   # each receiver's own numbering
    assert sessions[2][1].writes == []            # backed up: nothing written now ...
    queued = [backed_link.out.pop() for _ in range(3)]   # ... both chats queued reliably, tick coalesced
    assert [msgpack.unpackb(q)["text"] for q in queued[:2]] == ["one", "two"]
    assert isinstance(queued[2], dict) and queued[2]["t"] == "tick"

    server.runners["arena"].announce({"t": "level_up", "name": "p0", "level": 2})
    assert frames_of(sessions[0][1].writes[-1]) == [{"t": "level_up", "name": "p0", "level": 2, "seq": 3}]
