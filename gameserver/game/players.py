"""Mutable state of one player in a room."""

from __future__ import annotations


class Player:
    """A player in a room: id, character name, position and the times its rules depend on.

    `last_move` is the time of the last accepted move (or of the join): the speed limit allows
    `speed * min(1 s, now - last_move)` per move. `next_attack` is when the attack cooldown ends.
    """

    __slots__ = ("id", "last_move", "name", "next_attack", "x", "y")

    def __init__(self, pid: int, name: str, x: float, y: float, now: float) -> None:
        self.id = pid
        self.name = name
        self.x = x
        self.y = y
        self.last_move = now
        self.next_attack = float("-inf")
