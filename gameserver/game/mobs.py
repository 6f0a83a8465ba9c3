"""Mutable state of one mob: hp, who hit it this life, when it respawns."""

from __future__ import annotations

from .world import MobSpec


class Mob:
    """A mob of a room. A life runs from (re)spawn to the killing blow; `hitters` are the names that hit this
    life, in first-hit order (a dict used as an ordered set), and are cleared at respawn."""

    __slots__ = ("hitters", "hp", "id", "kind", "respawn_at", "spec", "x", "y")

    def __init__(self, spec: MobSpec) -> None:
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.x = spec.x
        self.y = spec.y
        self.hp = spec.hp
        self.hitters: dict[str, None] = {}
        self.respawn_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.respawn_at is None

    def take_hit(self, name: str, dmg: int, now: float, respawn_seconds: float) -> bool:
        """Apply one hit by `name`; returns True when it was the killing blow (the mob is then dead)."""
        self.hitters.setdefault(name, None)
        self.hp = max(0, self.hp - dmg)
        if self.hp == 0:
            self.respawn_at = now + respawn_seconds
            return True
        return False

    def respawn(self) -> None:
        """Back to full hp, same id and place, with a fresh list of hitters."""
        self.hp = self.spec.hp
        self.hitters = {}
        self.respawn_at = None
