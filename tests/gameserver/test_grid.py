"""Spatial grid: cells, neighbourhoods, membership."""

from __future__ import annotations

import pytest

from gameserver.rooms.grid import Grid


def test_cells_cover_the_room_including_the_far_edges() -> None:
    grid = Grid(1000, 600, 250)
    assert (grid.cols, grid.rows) == (4, 3)
    assert grid.cell_of(0, 0) == 0
    assert grid.cell_of(249.999, 0) == 0
    assert grid.cell_of(250, 0) == 1
    assert grid.cell_of(1000, 0) == 3  # x == width belongs to the last column
    assert grid.cell_of(0, 600) == 2 * 4  # partial last row
    assert grid.cell_of(1000, 600) == 11
    assert grid.cell_of(-5, -5) == 0 and grid.cell_of(5000, 5000) == 11


def test_neighbourhood_sizes_at_corner_edge_and_middle() -> None:
    grid = Grid(1000, 1000, 250)
    assert sorted(grid.neighbourhood(0)) == [0, 1, 4, 5]
    assert sorted(grid.neighbourhood(1)) == [0, 1, 2, 4, 5, 6]
    assert sorted(grid.neighbourhood(5)) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert sorted(grid.neighbourhood(15)) == [10, 11, 14, 15]
    assert grid.neighbourhood_set(5) == frozenset(grid.neighbourhood(5))


def test_single_cell_room() -> None:
    grid = Grid(100, 100, 250)
    assert (grid.cols, grid.rows) == (1, 1)
    assert grid.neighbourhood(0) == (0,)


def test_membership_add_relocate_remove_leaves_no_empty_cells() -> None:
    grid = Grid(1000, 1000, 250)
    grid.add(1, 0)
    grid.add(2, 0)
    grid.add(3, 15)
    assert grid.around(0) == {1, 2}
    assert grid.around(5) == {1, 2}
    assert grid.around(10) == {3}
    grid.relocate(1, 0, 5)
    assert grid.members == {0: {2}, 5: {1}, 15: {3}}
    grid.remove(2, 0)
    grid.remove(3, 15)
    assert grid.members == {5: {1}}
    assert grid.near([0, 15]) == set()


def test_invalid_grid_is_rejected() -> None:
    with pytest.raises(ValueError):
        Grid(100, 100, 0)
