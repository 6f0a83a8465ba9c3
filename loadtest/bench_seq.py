"""What numbering costs on the send path: a room-wide message flushed by the real ``Outbox`` to N receivers.

    python -m loadtest.bench_seq --receivers 200 --rounds 300

Three ways, same bodies, same sessions and links (a sink that only counts bytes):

* ``shared``: the bytes encoded once and written as is to everyone (what an unnumbered message costs; the
  send path before ``seq``);
* ``splice``: encoded once, each receiver's ``seq`` spliced in (``gameserver.seqwire``), stamped and kept in
  its replay buffer: what the server does;
* ``re-encode``: the same, but the body encoded again per receiver with its ``seq``: the alternative the
  splice avoids.

Prints nanoseconds per receiver per message, for msgpack and JSON receivers.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gameserver import outbox as outbox_module
from gameserver.characters import Character
from gameserver.config import LimitsConfig
from gameserver.metrics import Metrics
from gameserver.outbox import Outbox
from gameserver.replay import ReplayBuffer, ReplayLimits
from gameserver.session import Link, Session
from gameserver.wsframe import server_frame
from shared.codec import encode_raw


class CountingSink:
    """A socket that takes every write at once and only counts the bytes."""

    def __init__(self) -> None:
        self.bytes = 0
        self.is_open = True

    def send(self, frame: bytes | str) -> None:
        self.bytes += len(frame)

    def send_wire(self, wire: bytes) -> None:
        self.bytes += len(wire)

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


def _sessions(n: int, binary: bool) -> list[Session]:
    metrics, limits = Metrics(), LimitsConfig()
    out = []
    for i in range(n):
        link = Link(CountingSink(), limits, metrics, 0.0)
        link.binary = binary
        session = Session(f"s{i}", Character(name=f"p{i:05d}", secret="x"), ReplayBuffer(ReplayLimits()))
        session.link, link.session = link, session
        out.append(session)
    return out


def _re_encode(self: Any, binary: bool, seq: int) -> bytes:
    return server_frame(encode_raw({**self.body, "seq": seq}, binary))


def run(receivers: int, rounds: int, binary: bool, mode: str) -> float:
    """ns per receiver per message."""
    sessions = _sessions(receivers, binary)
    box = Outbox(Metrics())
    t = "pong" if mode == "shared" else "chat"   # pong is never numbered: the shared-bytes path
    original = outbox_module._Encoded.numbered_wire
    if mode == "re-encode":
        outbox_module._Encoded.numbered_wire = _re_encode  # type: ignore[method-assign]
    try:
        box.buffering = True
        start = time.perf_counter()
        for i in range(rounds):
            box.room({"t": t, "from": "alice", "text": f"hello there number {i}", "ts": 1764129600.25},
                     list(sessions))
            box.flush(i)
        elapsed = time.perf_counter() - start
    finally:
        outbox_module._Encoded.numbered_wire = original  # type: ignore[method-assign]
    return elapsed / (rounds * receivers) * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    for binary in (True, False):
        figures = {mode: min(run(args.receivers, args.rounds, binary, mode) for _ in range(3))
                   for mode in ("shared", "splice", "re-encode")}
        cells = "  ".join(f"{mode} {ns:6.0f} ns" for mode, ns in figures.items())
        print(f"{'msgpack' if binary else 'json':8s} {cells}   (per receiver per message, "
              f"{args.receivers} receivers)")


if __name__ == "__main__":
    main()
