"""Bounded per-session outgoing queue used while a socket is backed up.

Two parts with two overflow policies:
- reliable: already-encoded frames (replies, chat, xp, hit, level_up, bye) in FIFO order, never dropped;
  more than ``max_reliable`` pending raises ``QueueOverflow`` and the session is disconnected.
- ticks: at most ONE pending tick. Each new tick is merged into it (``moved`` keeps the latest position per
  player, ``joined``/``left`` cancel out, ``mobs`` keeps the latest hp; any other list of ``[id, ...]``
  entries a room type sends keeps the latest entry per id, any other value the latest value), so a slow
  client gets the latest state, not a backlog, and memory stays bounded by the room's size.

The writer drains reliable frames first, then the merged tick. A room change calls ``reset_tick`` because a
``joined`` reply carries a full snapshot and older tick state of another room must not follow it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

Frame = bytes | str


class QueueOverflow(Exception):
    """The reliable queue is over its bound: the session must be disconnected."""


_KNOWN = frozenset({"t", "n", "ts", "moved", "joined", "left", "mobs"})


class TickAccumulator:
    """Merges tick bodies (wire shape: moved/joined/left/mobs lists) into one."""

    __slots__ = ("extra", "joined", "left", "mobs", "moved", "n", "ts")

    def __init__(self) -> None:
        self.moved: dict[Any, list[Any]] = {}
        self.joined: dict[Any, list[Any]] = {}
        self.left: dict[Any, None] = {}
        self.mobs: dict[Any, Any] = {}
        self.extra: dict[str, tuple[bool, Any]] = {}   # other keys: (True, {id: entry}) or (False, value)
        self.n = 0
        self.ts = 0.0

    def merge(self, body: dict[str, Any], n: int, ts: float) -> None:
        self.n, self.ts = n, ts
        for entry in body.get("left") or ():
            # joined-then-left inside the window still sends left: the client may know it from before
            self.moved.pop(entry, None)
            self.joined.pop(entry, None)
            self.left[entry] = None
        # Entries are the tick's own lists, shared by every receiver of the tick: kept by reference, never
        # changed in place (a backed-up link must not copy each entry of a crowded room's ticks).
        for entry in body.get("joined") or ():
            pid = entry[0]
            self.left.pop(pid, None)
            self.moved.pop(pid, None)
            self.joined[pid] = entry
        for entry in body.get("moved") or ():
            pid = entry[0]
            joined = self.joined.get(pid)
            if joined is not None:
                self.joined[pid] = [pid, joined[1], entry[1], entry[2]]
            else:
                self.moved[pid] = entry
        for mob, hp in body.get("mobs") or ():
            self.mobs[mob] = hp
        for key, value in body.items():
            if key not in _KNOWN:
                self._merge_extra(key, value)

    def _merge_extra(self, key: str, value: Any) -> None:
        if isinstance(value, list) and all(isinstance(e, list | tuple) and e for e in value):
            known = self.extra.get(key)
            entries = known[1] if known is not None and known[0] else {}
            for entry in value:
                try:
                    entries[entry[0]] = entry
                except TypeError:   # an unhashable id: no merging possible, keep the latest list
                    self.extra[key] = (False, value)
                    return
            self.extra[key] = (True, entries)
        else:
            self.extra[key] = (False, value)

    def body(self) -> dict[str, Any]:
        body = {
            "t": "tick", "n": self.n, "ts": self.ts,
            "moved": list(self.moved.values()), "joined": list(self.joined.values()),
            "left": list(self.left), "mobs": [[m, hp] for m, hp in self.mobs.items()],
        }
        for key, (by_id, value) in self.extra.items():
            body[key] = list(value.values()) if by_id else value
        return body


_NONE: tuple[()] = ()


class OutQueue:
    """A session's backlog: reliable frames in order, then at most one merged tick (module docstring)."""

    __slots__ = ("coalesced", "max_reliable", "reliable", "tick")

    def __init__(self, max_reliable: int) -> None:
        self.max_reliable = max_reliable
        # An empty tuple until the first frame waits: most sessions never back up, and an empty deque
        # costs ~760 bytes per connected player.
        self.reliable: deque[Frame] | tuple[()] = _NONE
        self.tick: TickAccumulator | None = None
        self.coalesced = 0   # ticks merged into a pending one (metric)

    def __len__(self) -> int:
        return len(self.reliable) + (1 if self.tick is not None else 0)

    def __bool__(self) -> bool:
        return bool(self.reliable) or self.tick is not None

    def push_reliable(self, frame: Frame) -> None:
        if len(self.reliable) >= self.max_reliable:
            raise QueueOverflow(f"reliable queue over {self.max_reliable}")
        if not isinstance(self.reliable, deque):
            self.reliable = deque()
        self.reliable.append(frame)

    def push_tick(self, body: dict[str, Any], n: int, ts: float) -> None:
        if self.tick is None:
            self.tick = TickAccumulator()
        else:
            self.coalesced += 1
        self.tick.merge(body, n, ts)

    def reset_tick(self) -> None:
        self.tick = None

    def pop(self) -> Frame | dict[str, Any] | None:
        """Next item to write: an encoded reliable frame, a merged tick dict to encode, or None."""
        if self.reliable:
            return self.reliable.popleft()   # type: ignore[union-attr]  # non-empty: a deque
        if self.tick is not None:
            body, self.tick = self.tick.body(), None
            return body
        return None
