"""Pure game-rules core: rooms, mobs, moves, attacks and area-of-interest deliveries (no I/O, no clock)."""

from ..rooms.aoi import Delivery
from .room import AttackOutcome, GameError, Room
from .rules import Rules, level_for_xp, xp_for_level
from .world import SPAWN_ROOM, MobSpec, RoomSpec, default_rooms, spawn_point

__all__ = [
    "SPAWN_ROOM",
    "AttackOutcome",
    "Delivery",
    "GameError",
    "MobSpec",
    "Room",
    "RoomSpec",
    "Rules",
    "default_rooms",
    "level_for_xp",
    "spawn_point",
    "xp_for_level",
]
