"""Rules, formulas and the default world."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gameserver.game import SPAWN_ROOM, MobSpec, Room, RoomSpec, Rules, default_rooms, spawn_point
from gameserver.game.room import GameError
from gameserver.game.rules import MAX_HITS_TO_KILL, level_for_xp, xp_for_level


class MinDamage(random.Random):
    """Worst case for the player: every hit deals `dmg_min`."""

    def randint(self, a: int, b: int) -> int:
        return a


@pytest.mark.parametrize(
    ("xp", "level"),
    [(0, 1), (1, 1), (99, 1), (100, 2), (399, 2), (400, 3), (899, 3), (900, 4), (10_000, 11), (-5, 1)],
)
def test_level_for_xp_table(xp: int, level: int) -> None:
    assert level_for_xp(xp) == level


@given(st.integers(min_value=0, max_value=10**40))
def test_level_for_xp_is_exact_floor_sqrt(xp: int) -> None:
    k = level_for_xp(xp) - 1
    assert 100 * k * k <= xp < 100 * (k + 1) ** 2


@given(st.integers(min_value=0, max_value=10**12))
def test_level_for_xp_matches_float_formula_in_practical_range(xp: int) -> None:
    assert level_for_xp(xp) == 1 + math.floor(math.sqrt(xp / 100))


@given(st.integers(min_value=1, max_value=10_000))
def test_xp_for_level_is_the_first_xp_of_that_level(level: int) -> None:
    xp = xp_for_level(level)
    assert level_for_xp(xp) == level
    assert level_for_xp(xp - 1) == level - 1 or level == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"speed": 0},
        {"speed": math.inf},
        {"attack_range": -1},
        {"cell_size": 0},
        {"attack_cooldown": -0.1},
        {"respawn_seconds": math.nan},
        {"dmg_min": 0},
        {"dmg_min": 30, "dmg_max": 20},
    ],
)
def test_rules_reject_invalid_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        Rules(**bad)


def test_room_rejects_a_mob_that_cannot_die_within_20_hits() -> None:
    rules = Rules(dmg_min=5, dmg_max=9)
    ok = RoomSpec("r", 100, 100, (MobSpec(1, "blob", 10, 10, hp=100, xp=1),))
    Room(ok, rules)
    too_tough = RoomSpec("r", 100, 100, (MobSpec(1, "blob", 10, 10, hp=101, xp=1),))
    with pytest.raises(ValueError, match="20 hits"):
        Room(too_tough, rules)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RoomSpec("", 10, 10),
        lambda: RoomSpec("r", 0, 10),
        lambda: RoomSpec("r", 10, math.inf),
        lambda: RoomSpec("r", 10, 10, (MobSpec(1, "a", 1, 1, 1, 1), MobSpec(1, "b", 2, 2, 1, 1))),
        lambda: RoomSpec("r", 10, 10, (MobSpec(1, "a", 11, 1, 1, 1),)),
        lambda: MobSpec(1, "a", 1, 1, hp=0, xp=1),
        lambda: MobSpec(1, "a", math.nan, 1, hp=1, xp=1),
    ],
)
def test_specs_reject_invalid_rooms_and_mobs(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_default_world_has_town_forest_dungeon_of_1000_units() -> None:
    rooms = {spec.name: spec for spec in default_rooms()}
    assert set(rooms) == {"town", "forest", "dungeon"}
    assert all((spec.width, spec.height) == (1000.0, 1000.0) for spec in rooms.values())
    assert rooms["town"].mobs == ()
    forest_kinds = {mob.kind for mob in rooms["forest"].mobs}
    dungeon_kinds = {mob.kind for mob in rooms["dungeon"].mobs}
    assert len(forest_kinds) >= 2 and len(dungeon_kinds) >= 2 and not forest_kinds & dungeon_kinds
    for spec in rooms.values():
        assert len({mob.id for mob in spec.mobs}) == len(spec.mobs)
        assert all(mob.xp > 0 for mob in spec.mobs)
    assert SPAWN_ROOM == "town"
    assert spawn_point(rooms["town"]) == (500.0, 500.0)
    assert default_rooms() == default_rooms()  # deterministic layout


@pytest.mark.parametrize("spec", [s for s in default_rooms() if s.mobs], ids=lambda s: s.name)
def test_every_default_mob_dies_within_20_hits_at_minimum_damage(spec: RoomSpec) -> None:
    rules = Rules()
    room = Room(spec, rules, MinDamage())
    for mob in spec.mobs:
        pid = room.add_player("hero", mob.x, mob.y, now=0.0)
        now = 0.0
        hits = 0
        killed = False
        while not killed and hits < MAX_HITS_TO_KILL:
            outcome = room.attack(pid, mob.id, now)
            assert outcome.dmg == rules.dmg_min
            hits += 1
            killed = outcome.killed
            now += rules.attack_cooldown
        assert killed, f"{mob.kind} survived {MAX_HITS_TO_KILL} hits"
        with pytest.raises(GameError):
            room.attack(pid, mob.id, now)
        room.remove_player(pid)
