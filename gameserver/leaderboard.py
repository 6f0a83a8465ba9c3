"""In-memory leaderboard: highest XP first, ties by name.

Rebuilt from one ``store.scan`` at start-up and updated on every acknowledged XP grant, so ``top`` never
scans. Kept as a sorted list of ``(-xp, name)`` keys: update is a bisect + list insert, ``top(n)`` a slice.
"""

from __future__ import annotations

import bisect
from typing import Any


class Leaderboard:
    def __init__(self) -> None:
        self._keys: list[tuple[int, str]] = []
        self._by_name: dict[str, tuple[int, int]] = {}   # name -> (xp, level)

    def __len__(self) -> int:
        return len(self._by_name)

    def update(self, name: str, xp: int, level: int) -> None:
        old = self._by_name.get(name)
        if old is not None:
            if old == (xp, level):
                return
            i = bisect.bisect_left(self._keys, (-old[0], name))
            if i < len(self._keys) and self._keys[i] == (-old[0], name):
                del self._keys[i]
        self._by_name[name] = (xp, level)
        bisect.insort(self._keys, (-xp, name))

    def raise_to(self, name: str, xp: int, level: int) -> None:
        """Like ``update`` but never lowers a character's XP (writes from several nodes may arrive late)."""
        old = self._by_name.get(name)
        if old is None or xp > old[0]:
            self.update(name, xp, level)

    def top(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _neg_xp, name in self._keys[: max(0, n)]:
            xp, level = self._by_name[name]
            out.append({"name": name, "level": level, "xp": xp})
        return out

    def rank_of(self, name: str) -> int | None:
        entry = self._by_name.get(name)
        if entry is None:
            return None
        return bisect.bisect_left(self._keys, (-entry[0], name)) + 1
