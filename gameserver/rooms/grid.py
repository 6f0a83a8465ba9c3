"""Spatial grid for areas of interest: a player sees its own cell and the 8 cells around it.

Cells are integers (`row * cols + col`) so they hash fast and can key plain dicts. Positions on the far edge
of the room (`x == width`) belong to the last column. The grid only indexes membership; deciding who needs to
hear about what is the job of `gameserver.rooms.aoi`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class Grid:
    """Cell index of the players of one room: `members[cell]` is the set of ids in a cell (never empty)."""

    __slots__ = ("_near", "_near_set", "cell_size", "cols", "members", "rows")

    def __init__(self, width: float, height: float, cell_size: float) -> None:
        if not (cell_size > 0 and width > 0 and height > 0):
            raise ValueError("grid needs width, height and cell_size > 0")
        self.cell_size = float(cell_size)
        self.cols = max(1, math.ceil(width / cell_size))
        self.rows = max(1, math.ceil(height / cell_size))
        self.members: dict[int, set[int]] = {}
        self._near: dict[int, tuple[int, ...]] = {}
        self._near_set: dict[int, frozenset[int]] = {}

    def cell_of(self, x: float, y: float) -> int:
        """Cell holding the point; points outside the grid are attributed to the nearest edge cell."""
        col = min(self.cols - 1, max(0, int(x // self.cell_size)))
        row = min(self.rows - 1, max(0, int(y // self.cell_size)))
        return row * self.cols + col

    def neighbourhood(self, cell: int) -> tuple[int, ...]:
        """The cell and its (up to) 8 neighbours inside the grid; cached, so cheap on the hot path."""
        near = self._near.get(cell)
        if near is None:
            row, col = divmod(cell, self.cols)
            near = tuple(
                r * self.cols + c
                for r in range(max(0, row - 1), min(self.rows, row + 2))
                for c in range(max(0, col - 1), min(self.cols, col + 2))
            )
            self._near[cell] = near
        return near

    def neighbourhood_set(self, cell: int) -> frozenset[int]:
        """`neighbourhood(cell)` as a frozenset, for set algebra between two neighbourhoods."""
        near = self._near_set.get(cell)
        if near is None:
            near = self._near_set[cell] = frozenset(self.neighbourhood(cell))
        return near

    def add(self, pid: int, cell: int) -> None:
        members = self.members.get(cell)
        if members is None:
            self.members[cell] = {pid}
        else:
            members.add(pid)

    def remove(self, pid: int, cell: int) -> None:
        members = self.members[cell]
        members.discard(pid)
        if not members:
            del self.members[cell]

    def relocate(self, pid: int, old: int, new: int) -> None:
        if old != new:
            self.remove(pid, old)
            self.add(pid, new)

    def near(self, cells: Iterable[int]) -> set[int]:
        """Union of the members of the given cells."""
        out: set[int] = set()
        members = self.members
        for cell in cells:
            found = members.get(cell)
            if found:
                out |= found
        return out

    def around(self, cell: int) -> set[int]:
        """Ids in the area of interest of a player standing in `cell`."""
        return self.near(self.neighbourhood(cell))
