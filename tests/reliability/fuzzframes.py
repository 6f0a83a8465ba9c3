"""Seeded generator of hostile client frames: mutated golden fixtures and random structures.

Pure (no I/O beyond reading ``tests/golden`` once): ``FrameFuzzer(seed).frame()`` returns one frame, bytes for
a binary websocket frame or str for a text frame, and the name of the strategy that made it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgpack

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CLIENT_TYPES = ["login", "resume", "join", "leave", "move", "chat", "attack", "me", "top", "ping"]
JUNK_TEXT = ["", "\x00", "é", "\u202e", "\U0001f600" * 5, "\ufeff", "a" * 300, "t", "rid", "..", "%s%n",
             "<script>", "'; DROP TABLE", "\\u0000", "\r\n", "\U0001d54f" * 40, "NaN"]
HUGE_INTS = [2**63, 2**64 - 1, -(2**63), -(2**63) - 1, 2**31, -1, 0, 10**18]


def _golden() -> tuple[list[bytes], list[str], list[dict[str, Any]]]:
    binary = [p.read_bytes() for p in sorted(GOLDEN.glob("c2s_*.msgpack"))]
    text = [p.read_text() for p in sorted(GOLDEN.glob("c2s_*.json"))]
    dicts = [msgpack.unpackb(b) for b in binary]
    return binary, text, dicts


class FrameFuzzer:
    def __init__(self, seed: int, *, big_every: int = 400) -> None:
        self.rng = random.Random(seed)
        self.binary, self.text, self.dicts = _golden()
        self.big_every = big_every
        self.count = 0

    # -- values ------------------------------------------------------------------------------------
    def value(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(12 if depth < 4 else 8)
        if kind == 0:
            return r.choice(HUGE_INTS)
        if kind == 1:
            return r.randint(-1000, 1000)
        if kind == 2:
            return r.choice([0.0, -0.0, 1e308, -1e308, 5e-324, 3.14, r.uniform(-1e6, 1e6)])
        if kind == 3:
            return r.choice(JUNK_TEXT)
        if kind == 4:
            return "".join(chr(r.choice([r.randrange(32, 127), r.randrange(0xA0, 0xD7FF)]))
                           for _ in range(r.randrange(0, 40)))
        if kind == 5:
            return r.choice([None, True, False])
        if kind == 6:
            return r.choice(CLIENT_TYPES)
        if kind == 7:
            return bytes(r.randrange(256) for _ in range(r.randrange(0, 16)))
        if kind in (8, 9):
            return [self.value(depth + 1) for _ in range(r.randrange(0, 6))]
        return {self._key(): self.value(depth + 1) for _ in range(r.randrange(0, 6))}

    def _key(self) -> Any:
        r = self.rng
        return r.choice(["t", "rid", "x", "y", "name", "secret", "token", "room", "text", "mob", "n",
                         r.choice(JUNK_TEXT) or "k"])

    def deep(self) -> Any:
        depth = self.rng.choice([50, 200, 1000, 3000])
        node: Any = self.rng.choice([1, "t", None])
        for _ in range(depth):
            node = [node] if self.rng.random() < 0.5 else {"t": node}
        return node

    # -- encodings ---------------------------------------------------------------------------------
    def _encode(self, obj: Any, binary: bool) -> bytes | str | None:
        try:
            if binary:
                return msgpack.packb(obj, use_bin_type=self.rng.random() < 0.8)
            return json.dumps(obj, default=lambda b: b.hex() if isinstance(b, bytes) else str(b),
                              ensure_ascii=self.rng.random() < 0.5)
        except (ValueError, TypeError, OverflowError, RecursionError):
            return None

    # -- strategies --------------------------------------------------------------------------------
    def flip(self) -> bytes | str:
        r = self.rng
        if r.random() < 0.6:
            data = bytearray(r.choice(self.binary))
            for _ in range(r.randrange(1, 6)):
                data[r.randrange(len(data))] = r.randrange(256)
            return bytes(data)
        text = list(r.choice(self.text))
        for _ in range(r.randrange(1, 6)):
            text[r.randrange(len(text))] = chr(r.choice([r.randrange(32, 127), r.randrange(0xA0, 0x3000)]))
        return "".join(text)

    def truncate(self) -> bytes | str:
        r = self.rng
        frame: bytes | str = r.choice(self.binary) if r.random() < 0.6 else r.choice(self.text)
        return frame[: r.randrange(0, len(frame))]

    def splice(self) -> bytes | str:
        r = self.rng
        if r.random() < 0.6:
            a, b = r.choice(self.binary), r.choice(self.binary)
            return a[: r.randrange(len(a) + 1)] + b[r.randrange(len(b) + 1):]
        ta, tb = r.choice(self.text), r.choice(self.text)
        return ta[: r.randrange(len(ta) + 1)] + tb[r.randrange(len(tb) + 1):]

    def mutate_fields(self) -> bytes | str:
        r = self.rng
        msg = dict(r.choice(self.dicts))
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(4)
            keys = list(msg)
            if op == 0 and keys:
                msg[r.choice(keys)] = self.value()
            elif op == 1 and keys:
                msg.pop(r.choice(keys))
            elif op == 2:
                msg[self._key()] = self.value()
            else:
                msg["t"] = r.choice([*CLIENT_TYPES, *JUNK_TEXT])
        return self._encode(msg, r.random() < 0.6) or b"\xc1"

    def random_structure(self) -> bytes | str:
        obj = self.value() if self.rng.random() < 0.3 else {self._key(): self.value() for _ in range(4)}
        return self._encode(obj, self.rng.random() < 0.6) or "{"

    def random_bytes(self) -> bytes | str:
        r = self.rng
        if r.random() < 0.7:
            return bytes(r.randrange(256) for _ in range(r.randrange(0, 64)))
        return "".join(chr(r.randrange(1, 0xD7FF)) for _ in range(r.randrange(0, 64)))

    def nested(self) -> bytes | str:
        return self._encode(self.deep(), self.rng.random() < 0.5) or "[[["

    def big(self) -> bytes | str:
        """Just over the 16 KiB message limit (bye too_large), rarely over the 1 MiB hard cap (close 1009)."""
        size = 2 * 2**20 if self.rng.random() < 0.1 else 17_000 + self.rng.randrange(4000)
        if self.rng.random() < 0.5:
            return msgpack.packb({"t": "chat", "text": "x" * size})
        return json.dumps({"t": "chat", "text": "y" * size})

    STRATEGIES = ("flip", "truncate", "splice", "mutate_fields", "random_structure", "random_bytes", "nested")

    def frame(self) -> tuple[str, bytes | str]:
        self.count += 1
        if self.big_every and self.count % self.big_every == 0:
            return "big", self.big()
        name = self.rng.choice(self.STRATEGIES)
        return name, getattr(self, name)()
