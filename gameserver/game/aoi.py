"""Areas of interest: turning what changed since the last step into tick deliveries.

Model. A client's view of the players is what its deliveries built up: after each step it must equal the
players whose cell lies in the neighbourhood (3 x 3 cells) of the receiver's cell, at their current positions.
Changes are recorded as they happen (`ChangeLog`), so a step costs O(changes x 9 + touched cells), never
O(players^2).

Receivers fall in two groups:

* Settled players (same cell as at the previous step, not just joined, no fresh `view_for` snapshot) in one
  cell all have the same neighbourhood and the same client view, so they share ONE `Delivery` per cell. Its
  body, for neighbourhood N: `moved` = players seen before and after whose position changed (the receiver's
  own entry included), `joined` = players now in N that were not (joined the room there or walked in), `left`
  = players that were in N and are not (left the room or walked out), `mobs` = `[id, hp]` of mobs in N whose
  hp changed.
* Unsettled players (cell changed, joined this step, or `view_for` was called for them since the last step)
  get a personal `Delivery` computed against their own old view: the players of their previous neighbourhood,
  or the exact set `view_for` returned (the server sends it as `joined` right after `add_player`), or nothing
  when a joiner got no snapshot. `mobs` then also carries the current hp of every mob in cells newly in view
  (a snapshot already listed every mob, so a snapshot holder only gets the mobs that changed since; nor is it
  told again of moves the snapshot already showed).

Body lists are in wire shape; keys with empty lists are omitted; an empty body yields no delivery. A player
appears in at most one delivery per step. Players that joined and left within one step are invisible to
others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from .grid import Grid
from .mobs import Mob
from .players import Player


@dataclass(slots=True)
class Delivery:
    """One tick body for a group of players: encode `body` once and send the same bytes to every pid."""

    pids: list[int]
    body: dict


class Snapshot(NamedTuple):
    """What `view_for` told a client: player id -> position, mob id -> hp."""

    players: dict[int, tuple[float, float]]
    mobs: dict[int, int]


@dataclass(slots=True)
class ChangeLog:
    """Everything that changed since the last step, recorded by the room as it happens."""

    moved: set[int] = field(default_factory=set)
    """Players whose position changed (or whose move was cut short and needs correcting)."""
    prev_cell: dict[int, int | None] = field(default_factory=dict)
    """Cell at the last step of players whose cell changed since; None for players who joined since."""
    departed: dict[int, int] = field(default_factory=dict)
    """Players who left the room since the last step -> their cell at the last step."""
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    """Player -> what `view_for` gave it (its client view was reset to exactly that)."""
    mobs: set[int] = field(default_factory=set)
    """Mobs whose hp changed."""

    def __bool__(self) -> bool:
        return bool(self.moved or self.prev_cell or self.departed or self.snapshots or self.mobs)

    def note_join(self, pid: int) -> None:
        self.prev_cell[pid] = None

    def note_move(self, pid: int, old_cell: int, new_cell: int) -> None:
        self.moved.add(pid)
        if old_cell != new_cell and pid not in self.prev_cell:
            self.prev_cell[pid] = old_cell

    def note_leave(self, pid: int, cell: int) -> None:
        self.moved.discard(pid)
        self.snapshots.pop(pid, None)
        old = self.prev_cell.pop(pid, cell)
        if old is not None:  # None: joined and left within one step, nobody saw it
            self.departed[pid] = old

    def clear(self) -> None:
        self.moved.clear()
        self.prev_cell.clear()
        self.departed.clear()
        self.snapshots.clear()
        self.mobs.clear()


# Per-cell change lists: [moved, joined, left, mobs].
_Bucket = tuple[list, list, list, list]


def _bucket(buckets: dict[int, _Bucket], cell: int) -> _Bucket:
    found = buckets.get(cell)
    if found is None:
        found = buckets[cell] = ([], [], [], [])
    return found


def _body(moved: list, joined: list, left: list, mobs: list) -> dict:
    body: dict = {}
    if moved:
        body["moved"] = moved
    if joined:
        body["joined"] = joined
    if left:
        body["left"] = left
    if mobs:
        body["mobs"] = mobs
    return body


def build_deliveries(
    grid: Grid,
    players: Mapping[int, Player],
    log: ChangeLog,
    mobs: Mapping[int, Mob],
    mobs_by_cell: Mapping[int, list[Mob]],
) -> list[Delivery]:
    """Deliveries for everything in `log` (see the module docstring). Does not clear the log."""
    if not log:
        return []
    moved_set = log.moved
    prev = log.prev_cell
    near = grid.neighbourhood
    near_set = grid.neighbourhood_set

    # Changes seen the same way from every cell around where they happened, keyed by that cell.
    src: dict[int, _Bucket] = {}
    # Changes of players that changed cell, keyed by receiving cell (they differ across the 2 neighbourhoods).
    dst: dict[int, _Bucket] = {}
    # Players of the previous step's views that are no longer where they were, keyed by their previous cell.
    was_in: dict[int, list[int]] = {}
    unsettled: set[int] = set()

    for pid in moved_set:
        if pid not in prev:
            p = players[pid]
            _bucket(src, p.cell)[0].append([pid, p.x, p.y])
    for pid, old in prev.items():
        p = players[pid]
        if old is None:
            unsettled.add(pid)
            _bucket(src, p.cell)[1].append([pid, p.name, p.x, p.y])
        elif old == p.cell:  # walked out and back: a plain move for everyone
            if pid in moved_set:
                _bucket(src, old)[0].append([pid, p.x, p.y])
        else:
            unsettled.add(pid)
            was_in.setdefault(old, []).append(pid)
            near_old = near_set(old)
            near_new = near_set(p.cell)
            seen = [pid, p.x, p.y]
            fresh = [pid, p.name, p.x, p.y]
            for cell in near_new:
                if cell in near_old:
                    _bucket(dst, cell)[0].append(seen)
                else:
                    _bucket(dst, cell)[1].append(fresh)
            for cell in near_old - near_new:
                _bucket(dst, cell)[2].append(pid)
    for pid, old in log.departed.items():
        _bucket(src, old)[2].append(pid)
        was_in.setdefault(old, []).append(pid)
    for mid in log.mobs:
        mob = mobs[mid]
        _bucket(src, mob.cell)[3].append([mid, mob.hp])

    personal = unsettled | log.snapshots.keys()
    deliveries: list[Delivery] = []

    touched = set(dst)
    for cell in src:
        touched.update(near(cell))
    members = grid.members
    for cell in touched:
        here = members.get(cell)
        if not here:
            continue
        receivers = [q for q in here if q not in personal] if personal else list(here)
        if not receivers:
            continue
        moved: list = []
        joined: list = []
        left: list = []
        mob_hp: list = []
        for around in near(cell):
            b = src.get(around)
            if b is not None:
                moved += b[0]
                joined += b[1]
                left += b[2]
                mob_hp += b[3]
        b = dst.get(cell)
        if b is not None:
            moved += b[0]
            joined += b[1]
            left += b[2]
        body = _body(moved, joined, left, mob_hp)
        if body:
            deliveries.append(Delivery(receivers, body))

    for pid in personal:
        p = players[pid]
        near_new = near_set(p.cell)
        now_seen = grid.near(near_new)
        snapshot = log.snapshots.get(pid)
        old = prev.get(pid, p.cell)
        mob_cells: frozenset[int] = frozenset()
        if snapshot is not None:
            was_seen = set(snapshot.players)
        elif old is None:
            was_seen = set()
            mob_cells = near_new
        else:
            near_old = near_set(old)
            was_seen = grid.near(near_old) - unsettled
            for cell in near_old:
                gone = was_in.get(cell)
                if gone:
                    was_seen.update(gone)
            mob_cells = near_new - near_old
        joined = []
        for q in now_seen - was_seen:
            o = players[q]
            joined.append([q, o.name, o.x, o.y])
        left = list(was_seen - now_seen)
        moved = []
        for q in moved_set.intersection(now_seen, was_seen):
            o = players[q]
            if snapshot is None or snapshot.players[q] != (o.x, o.y):
                moved.append([q, o.x, o.y])
        hp: dict[int, int] = {}
        for cell in mob_cells:
            for mob in mobs_by_cell.get(cell, ()):
                hp[mob.id] = mob.hp
        for mid in log.mobs:
            mob = mobs[mid]
            if mob.cell in near_new and (snapshot is None or snapshot.mobs.get(mid) != mob.hp):
                hp[mid] = mob.hp
        body = _body(moved, joined, left, [[mid, value] for mid, value in hp.items()])
        if body:
            deliveries.append(Delivery([pid], body))
    return deliveries
