"""Room specifications and the default world (`town`, `forest`, `dungeon`).

Specs are frozen data: the server builds them from configuration (or takes `default_rooms()`) and gives each
to a `Room`. A spec validates what it can on its own (sizes, unique mob ids, mobs inside the room);
whether its mobs die within 20 hits depends on the `Rules` and is checked when the `Room` is built.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SPAWN_ROOM = "town"
"""Room of a newly created character; it starts at `spawn_point()` of that room (the centre)."""


@dataclass(frozen=True)
class MobSpec:
    """One mob: fixed place, full `hp` at (re)spawn, `xp` granted to every player who hit it when it dies."""

    id: int
    kind: str
    x: float
    y: float
    hp: int
    xp: int

    def __post_init__(self) -> None:
        if self.hp < 1 or self.xp < 0:
            raise ValueError(f"mob {self.id}: need hp >= 1 and xp >= 0")
        if not (math.isfinite(self.x) and math.isfinite(self.y)):
            raise ValueError(f"mob {self.id}: position must be finite")


@dataclass(frozen=True)
class RoomSpec:
    """A room: name, size in units (positions live in `[0, width] x [0, height]`) and its mobs."""

    name: str
    width: float
    height: float
    mobs: tuple[MobSpec, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("room name must not be empty")
        if not all(math.isfinite(v) and v > 0 for v in (self.width, self.height)):
            raise ValueError(f"room {self.name}: width and height must be finite and > 0")
        ids = [mob.id for mob in self.mobs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"room {self.name}: mob ids must be unique")
        for mob in self.mobs:
            if not (0 <= mob.x <= self.width and 0 <= mob.y <= self.height):
                raise ValueError(f"room {self.name}: mob {mob.id} is outside the room")


def spawn_point(spec: RoomSpec) -> tuple[float, float]:
    """Where a new character appears: the centre of the room."""
    return spec.width / 2, spec.height / 2


MOB_KINDS: dict[str, tuple[int, int]] = {
    # kind: (hp, xp). Default rules deal 10..20 per hit, so hp <= 200 dies within 20 hits.
    "slime": (40, 10),
    "wolf": (120, 35),
    "bat": (30, 15),
    "skeleton": (180, 60),
}


def scatter_mobs(
    kinds: dict[str, int], width: float, height: float, seed: int, margin: float = 50.0
) -> tuple[MobSpec, ...]:
    """Deterministic mob layout: `count` mobs of each kind at seeded random places, ids 1, 2, 3, ..."""
    rng = random.Random(seed)
    mobs: list[MobSpec] = []
    for kind, count in kinds.items():
        hp, xp = MOB_KINDS[kind]
        for _ in range(count):
            x = round(rng.uniform(margin, width - margin), 1)
            y = round(rng.uniform(margin, height - margin), 1)
            mobs.append(MobSpec(id=len(mobs) + 1, kind=kind, x=x, y=y, hp=hp, xp=xp))
    return tuple(mobs)


def default_rooms() -> list[RoomSpec]:
    """The protocol's default world: `town` (no mobs), `forest` and `dungeon` (mobs), each 1000 x 1000."""
    return [
        RoomSpec("town", 1000.0, 1000.0),
        RoomSpec("forest", 1000.0, 1000.0, scatter_mobs({"slime": 12, "wolf": 6}, 1000.0, 1000.0, seed=1)),
        RoomSpec("dungeon", 1000.0, 1000.0, scatter_mobs({"bat": 10, "skeleton": 8}, 1000.0, 1000.0, seed=2)),
    ]
