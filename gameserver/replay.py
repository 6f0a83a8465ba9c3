"""A session's numbered messages, kept so that a ``resume`` can replay what the client missed.

Every server message to a session except the types in ``UNSEQUENCED`` gets the session's next ``seq``
(1, 2, 3 ...) when it is written to the session's socket, or when it would be while the session is
detached: ``Session.stamp`` is the one call that numbers, and it records the message here. A ``resume``
with the client's last ``seq`` asks ``since(seq)``: every kept message after it, in order, when none of
them is missing (``recovered: true``), else None (``recovered: false``: nothing is replayed, never part).

Bounds, oldest evicted first (``[replay]`` in the config): ``max_messages`` (256), ``max_bytes`` (64 KiB of
encoded messages) and ``max_age`` (the reconnect grace period by default). The buffer dies with its
session, so nothing outlives the grace period. ``pin`` keeps messages sent after a given ``seq`` while a
resume waits for its ``joined`` (at most a tick or two), so a burst then cannot evict what was promised.

Bodies are kept as the dicts that were encoded (one dict shared by every receiver of a room-wide message;
nothing mutates a body once queued), so a replay encodes the same fields, ``ts`` included, in the new
socket's encoding, with the original ``seq``. ``export``/``restore`` carry the buffer to another node in
a hand-off (msgpack, base64 text: the cluster backends store text).
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from shared.codec import encode_raw
from shared.messages import UNSEQUENCED_TYPES

from .seqwire import with_seq

UNSEQUENCED = UNSEQUENCED_TYPES
"""Server message types without ``seq``: never numbered, never kept, never replayed."""

DEFAULT_MAX_MESSAGES = 256
DEFAULT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    max_messages: int = DEFAULT_MAX_MESSAGES   # 0: keep nothing (every resume after a loss is unrecovered)
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age: float = 30.0                      # seconds


class ReplayBuffer:
    """The newest numbered messages of one session; see the module docstring."""

    __slots__ = ("_bytes", "_entries", "_max_age", "_max_bytes", "_max_messages", "last", "limits", "lost",
                 "pinned")

    def __init__(self, limits: ReplayLimits, last: int = 0, *, lost: bool = False) -> None:
        self.limits = limits
        self._max_messages, self._max_bytes = limits.max_messages, limits.max_bytes
        self._max_age = limits.max_age
        self.last = last            # the highest seq given so far
        self.lost = lost            # history unknown (the node holding it died): no resume recovers
        self.pinned: int | None = None
        self._entries: deque[tuple[int, dict[str, Any], int, float]] = deque()   # seq, body, size, time
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def first(self) -> int:
        """The oldest seq still kept (``last + 1`` when none is)."""
        return self._entries[0][0] if self._entries else self.last + 1

    def stamp(self, body: dict[str, Any], size: int, now: float) -> int:
        """Number ``body`` (its encoded ``size`` in bytes counts against ``max_bytes``) and keep it."""
        self.last = seq = self.last + 1
        entries = self._entries
        if self._max_messages or self.pinned is not None:
            entries.append((seq, body, size, now))
            self._bytes += size
        if entries and (len(entries) > self._max_messages or self._bytes > self._max_bytes
                        or entries[0][3] < now - self._max_age):
            self._evict(now)
        return seq

    def _evict(self, now: float) -> None:
        entries, pinned = self._entries, self.pinned
        cutoff = now - self._max_age
        while entries and (len(entries) > self._max_messages or self._bytes > self._max_bytes
                           or entries[0][3] < cutoff):
            if pinned is not None and entries[0][0] > pinned:
                break
            self._bytes -= entries.popleft()[2]

    def since(self, seq: int, now: float) -> list[tuple[int, dict[str, Any]]] | None:
        """Every kept (seq, body) after ``seq``, or None when one of them is gone (or ``seq`` is newer
        than anything sent, or the history was lost)."""
        self._evict(now)
        if self.lost or seq > self.last or seq + 1 < self.first:
            return None
        return [(s, body) for s, body, _size, _at in self._entries if s > seq]

    def restart(self, seq: int) -> None:
        """After an unrecovered resume: numbering goes on after both what was sent and what the client
        says it saw, so it never sees a number twice."""
        self.last = max(self.last, seq)
        self.lost = False

    def pin(self, seq: int | None) -> None:
        """Keep every message after ``seq`` whatever the bounds (None: bounds apply again)."""
        self.pinned = seq

    # -- hand-off between nodes ---------------------------------------------------------------------
    def export(self, now: float) -> str:
        """The buffer as text for another node (times as ages: clocks of two nodes differ)."""
        self._evict(now)
        data = {"last": self.last, "lost": self.lost,
                "entries": [[s, body, size, now - at] for s, body, size, at in self._entries]}
        return base64.b64encode(msgpack.packb(data, use_bin_type=True)).decode("ascii")

    @classmethod
    def restore(cls, text: str, limits: ReplayLimits, now: float) -> ReplayBuffer:
        """A buffer exported by ``export`` (on this node or another), bounded by ``limits``. Raises
        ValueError when ``text`` is not one."""
        try:
            data = msgpack.unpackb(base64.b64decode(text), raw=False, strict_map_key=False)
            buf = cls(limits, int(data["last"]), lost=bool(data["lost"]))
            for seq, body, size, age in data["entries"]:
                buf._entries.append((int(seq), body, int(size), now - float(age)))
                buf._bytes += int(size)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise ValueError(f"not an exported replay buffer: {exc!r:.80}") from None
        buf._evict(now)
        return buf


def replay_frame(body: dict[str, Any], seq: int, binary: bool) -> bytes | str:
    """A kept message encoded again with its ``seq``: the same bytes as when it was first sent in that
    encoding (a body with a ``seq`` of its own gets ours in its place, like ``{**body, "seq": seq}``)."""
    if "seq" in body:
        return encode_raw({**body, "seq": seq}, binary)
    return with_seq(encode_raw(body, binary), seq)
