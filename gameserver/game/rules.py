"""Game constants and formulas: the numbers every room plays by.

Pure and side-effect free so the room core, the server (XP grants, `level_up`) and the tests share one
definition of each rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_HITS_TO_KILL = 20
"""A mob dies within this many hits (PROTOCOL.md); enforced as `mob hp <= MAX_HITS_TO_KILL * dmg_min`."""

MAX_MOVE_SECONDS = 1.0
"""A move may use at most this many seconds' worth of the speed limit, however long the player was idle."""


def level_for_xp(xp: int) -> int:
    """Level for an XP total: `1 + floor(sqrt(xp / 100))`, computed exactly with integers.

    `floor(sqrt(xp / 100)) == isqrt(xp // 100)` for every integer `xp >= 0`
    (k*k <= xp/100 iff k*k <= xp//100), and unlike float `sqrt` it stays exact for huge totals. Negative XP
    (never stored) counts as 0.
    """
    return 1 + math.isqrt(max(0, int(xp)) // 100)


def xp_for_level(level: int) -> int:
    """Smallest XP total that reaches `level` (inverse of `level_for_xp`); 0 for level 1 and below."""
    return 100 * (max(1, level) - 1) ** 2


@dataclass(frozen=True)
class Rules:
    """Tunable rules of one room (defaults are the protocol's). Validated on construction.

    `speed` is in units/s, `attack_range` in units, times in seconds; damage per hit is uniform in
    `[dmg_min, dmg_max]`. `cell_size` is the area-of-interest grid cell (a player sees its
    cell and the 8 around it).
    """

    speed: float = 300.0
    attack_range: float = 64.0
    attack_cooldown: float = 0.25
    respawn_seconds: float = 5.0
    cell_size: float = 250.0
    dmg_min: int = 10
    dmg_max: int = 20

    def __post_init__(self) -> None:
        for field in ("speed", "attack_range", "cell_size"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"rules.{field} must be a finite number > 0, got {value!r}")
        for field in ("attack_cooldown", "respawn_seconds"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"rules.{field} must be a finite number >= 0, got {value!r}")
        if not (1 <= self.dmg_min <= self.dmg_max):
            raise ValueError(f"rules need 1 <= dmg_min <= dmg_max, got {self.dmg_min}..{self.dmg_max}")

    @property
    def max_mob_hp(self) -> int:
        """Highest mob hp these rules allow: minimum damage still kills it within `MAX_HITS_TO_KILL`."""
        return MAX_HITS_TO_KILL * self.dmg_min
