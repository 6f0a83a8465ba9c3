"""Areas of interest on a grid: what each player must be told after a step, grouped to encode once.

A helper any room type can use (the built-in game does): ``AreaOfInterest`` tracks moving entities (players:
id, name, position) and fixtures (things that stay put and have a state, such as the built-in game's mobs
and their hp) on a square grid; a player sees its own cell and the 8 around it. Each step it turns what
changed into ``Delivery`` groups whose receivers all get the same body, so the body is encoded once per
group.

Model. A client's view of the players is what its deliveries built up: after each step it must equal the
players whose cell lies in the neighbourhood (3 x 3 cells) of the receiver's cell, at their current positions.
Changes are recorded as they happen (`ChangeLog`), so a step costs O(changes x 9 + touched cells), never
O(players^2).

Receivers fall in two groups:

* Settled players (same cell as at the previous step, not just joined, no fresh `view` snapshot) in one
  cell all have the same neighbourhood and the same client view, so they share ONE `Delivery` per cell. Its
  body, for neighbourhood N: `moved` = players seen before and after whose position changed (the receiver's
  own entry included), `joined` = players now in N that were not (joined the room there or walked in), `left`
  = players that were in N and are not (left the room or walked out), and under the fixtures key (`mobs` in
  the built-in game) `[id, state]` of fixtures in N whose state changed.
* Unsettled players (cell changed, joined this step, or `view` was called for them since the last step)
  get a personal `Delivery` computed against their own old view: the players of their previous neighbourhood,
  or the exact set `view` returned (sent as the `joined` reply right after `add`), or nothing
  when a joiner got no snapshot. The fixtures list then also carries the current state of every fixture in
  cells newly in view (a snapshot already listed every fixture, so a snapshot holder only gets the fixtures
  that changed since; nor is it told again of moves the snapshot already showed).

Body lists are in wire shape; keys with empty lists are omitted; an empty body yields no delivery. A player
appears in at most one delivery per step. Players that joined and left within one step are invisible to
others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .grid import Grid

__all__ = ["AreaOfInterest", "ChangeLog", "Delivery", "Fixture", "Grid", "Snapshot", "Tracked",
           "build_deliveries"]


@dataclass(slots=True)
class Delivery:
    """One tick body for a group of players: encode `body` once and send the same bytes to every pid."""

    pids: list[int]
    body: dict


class Snapshot(NamedTuple):
    """What `view` told a client: player id -> its ``Tracked.entry`` then, fixture id -> state."""

    players: dict[int, tuple[int, str, float, float]]
    fixtures: dict[int, Any]


class Tracked:
    """A moving entity (a player) as the area of interest sees it.

    ``entry`` is ``(id, name, x, y)``, made once per position: every snapshot that lists the player shares
    it, so a join into a crowd of n allocates no n small objects (they would fragment the heap for good).
    """

    __slots__ = ("cell", "entry", "id", "name", "x", "y")

    def __init__(self, pid: int, name: str, x: float, y: float, cell: int) -> None:
        self.id = pid
        self.name = name
        self.x = x
        self.y = y
        self.cell = cell
        self.entry = (pid, name, x, y)


class Fixture:
    """Something that stays where it is and has a state clients see (the built-in game: a mob and its hp)."""

    __slots__ = ("cell", "id", "state", "x", "y")

    def __init__(self, fid: int, x: float, y: float, cell: int, state: Any) -> None:
        self.id = fid
        self.x = x
        self.y = y
        self.cell = cell
        self.state = state


@dataclass(slots=True)
class ChangeLog:
    """Everything that changed since the last step, recorded as it happens."""

    moved: set[int] = field(default_factory=set)
    """Players whose position changed (or whose move was cut short and needs correcting)."""
    prev_cell: dict[int, int | None] = field(default_factory=dict)
    """Cell at the last step of players whose cell changed since; None for players who joined since."""
    departed: dict[int, int] = field(default_factory=dict)
    """Players who left the room since the last step -> their cell at the last step."""
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    """Player -> what `view` gave it (its client view was reset to exactly that)."""
    fixtures: set[int] = field(default_factory=set)
    """Fixtures whose state changed."""

    def __bool__(self) -> bool:
        return bool(self.moved or self.prev_cell or self.departed or self.snapshots or self.fixtures)

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
        self.fixtures.clear()


class AreaOfInterest:
    """Grid areas of interest of one room: track players and fixtures, get per-group tick bodies.

    Call ``add`` / ``move`` / ``remove`` as players come, walk and go, ``set_state`` when a fixture
    changes, ``view`` for a joiner's snapshot (send it right away: its next delivery is relative to it),
    and ``deliveries`` once per tick. Positions are taken as given (clamp them before). Not thread-safe;
    no I/O, no clock.
    """

    def __init__(self, width: float, height: float, cell_size: float = 250.0,
                 fixtures_key: str = "fixtures") -> None:
        self.grid = Grid(width, height, cell_size)
        self.fixtures_key = fixtures_key
        self.players: dict[int, Tracked] = {}
        self.fixtures: dict[int, Fixture] = {}
        self.fixtures_by_cell: dict[int, list[Fixture]] = {}
        self.log = ChangeLog()

    def __len__(self) -> int:
        return len(self.players)

    def __contains__(self, pid: object) -> bool:
        return pid in self.players

    def add_fixture(self, fid: int, x: float, y: float, state: Any) -> None:
        """Place a fixture (at set-up time: clients learn fixtures from ``view``)."""
        f = Fixture(fid, x, y, self.grid.cell_of(x, y), state)
        self.fixtures[fid] = f
        self.fixtures_by_cell.setdefault(f.cell, []).append(f)

    def set_state(self, fid: int, state: Any) -> None:
        """A fixture's state changed: players who see its cell get ``[id, state]`` at the next step."""
        self.fixtures[fid].state = state
        self.log.fixtures.add(fid)

    def add(self, pid: int, name: str, x: float, y: float) -> None:
        """A player enters at (x, y); players around see it ``joined`` at the next step."""
        cell = self.grid.cell_of(x, y)
        self.players[pid] = Tracked(pid, name, x, y, cell)
        self.grid.add(pid, cell)
        self.log.note_join(pid)

    def remove(self, pid: int) -> None:
        """A player leaves; players who saw it get ``left``. Unknown ids are ignored."""
        p = self.players.pop(pid, None)
        if p is None:
            return
        self.grid.remove(pid, p.cell)
        self.log.note_leave(pid, p.cell)

    def move(self, pid: int, x: float, y: float) -> None:
        """A player is now at (x, y) (or must be told again where it is): shown in ``moved``."""
        p = self.players[pid]
        old_cell = p.cell
        p.x, p.y = x, y
        p.entry = (pid, p.name, x, y)
        new_cell = self.grid.cell_of(x, y)
        if new_cell != old_cell:
            self.grid.relocate(pid, old_cell, new_cell)
            p.cell = new_cell
        self.log.note_move(pid, old_cell, new_cell)

    def visible(self, pid: int) -> list[Tracked]:
        """Players in ``pid``'s area of interest (itself included), by id."""
        p = self.players[pid]
        return [self.players[q] for q in sorted(self.grid.around(p.cell))]

    def view(self, pid: int) -> list[Tracked]:
        """``visible(pid)``, remembered as that player's client view: its next delivery is relative to it
        (and to the state of every fixture now)."""
        seen = self.visible(pid)
        self.log.snapshots[pid] = Snapshot({q.id: q.entry for q in seen},
                                           {f.id: f.state for f in self.fixtures.values()})
        return seen

    def deliveries(self) -> list[Delivery]:
        """Everything that changed since the previous call, as delivery groups; then forget it."""
        out = build_deliveries(self.grid, self.players, self.log, self.fixtures, self.fixtures_by_cell,
                               self.fixtures_key)
        self.log.clear()
        return out


# Per-cell change lists: [moved, joined, left, fixtures].
_Bucket = tuple[list, list, list, list]


def _bucket(buckets: dict[int, _Bucket], cell: int) -> _Bucket:
    found = buckets.get(cell)
    if found is None:
        found = buckets[cell] = ([], [], [], [])
    return found


def _body(moved: list, joined: list, left: list, fixtures: list, fixtures_key: str) -> dict:
    body: dict = {}
    if moved:
        body["moved"] = moved
    if joined:
        body["joined"] = joined
    if left:
        body["left"] = left
    if fixtures:
        body[fixtures_key] = fixtures
    return body


def build_deliveries(
    grid: Grid,
    players: Mapping[int, Tracked],
    log: ChangeLog,
    fixtures: Mapping[int, Fixture],
    fixtures_by_cell: Mapping[int, Iterable[Fixture]],
    fixtures_key: str = "fixtures",
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
    for fid in log.fixtures:
        f = fixtures[fid]
        _bucket(src, f.cell)[3].append([fid, f.state])

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
        states: list = []
        for around in near(cell):
            b = src.get(around)
            if b is not None:
                moved += b[0]
                joined += b[1]
                left += b[2]
                states += b[3]
        b = dst.get(cell)
        if b is not None:
            moved += b[0]
            joined += b[1]
            left += b[2]
        body = _body(moved, joined, left, states, fixtures_key)
        if body:
            deliveries.append(Delivery(receivers, body))

    changer = _Changers(players, members, src, was_in, unsettled, log.departed, moved_set) if FAST else None
    for pid in personal:
        p = players[pid]
        near_new = near_set(p.cell)
        snapshot = log.snapshots.get(pid)
        old = prev.get(pid, p.cell)
        if changer is not None and snapshot is None and old is not None and old != p.cell:
            near_old = near_set(old)
            moved, joined, left = changer.lists(pid, near_old, near_new)
            _fixture_states(log, fixtures, fixtures_by_cell, near_new - near_old, near_new, None,
                            (moved, joined, left), fixtures_key, pid, deliveries)
            continue
        now_seen = grid.near(near_new)
        fixture_cells: frozenset[int] = frozenset()
        if snapshot is not None:
            was_seen = set(snapshot.players)
        elif old is None:
            was_seen = set()
            fixture_cells = near_new
        else:
            near_old = near_set(old)
            was_seen = grid.near(near_old) - unsettled
            for cell in near_old:
                gone = was_in.get(cell)
                if gone:
                    was_seen.update(gone)
            fixture_cells = near_new - near_old
        joined = []
        for q in now_seen - was_seen:
            o = players[q]
            joined.append([q, o.name, o.x, o.y])
        left = list(was_seen - now_seen)
        moved = []
        for q in moved_set.intersection(now_seen, was_seen):
            o = players[q]
            if snapshot is None:
                moved.append([q, o.x, o.y])
            else:
                shown = snapshot.players[q]
                if shown is not o.entry and (shown[2] != o.x or shown[3] != o.y):
                    moved.append([q, o.x, o.y])
        _fixture_states(log, fixtures, fixtures_by_cell, fixture_cells, near_new, snapshot,
                        (moved, joined, left), fixtures_key, pid, deliveries)
    return deliveries


FAST = True
"""Cell changers' personal deliveries from per-cell lists shared within a step (``_Changers``); False runs
the general set algebra for them too (the tests compare both)."""


def _fixture_states(log: ChangeLog, fixtures: Mapping[int, Fixture],
                    fixtures_by_cell: Mapping[int, Iterable[Fixture]], fixture_cells: Iterable[int],
                    near_new: frozenset[int], snapshot: Snapshot | None, lists: tuple[list, list, list],
                    fixtures_key: str, pid: int, deliveries: list[Delivery]) -> None:
    """Finish a personal delivery: fixture states newly in view or changed, then the body if not empty."""
    moved, joined, left = lists
    state: dict[int, Any] = {}
    for cell in fixture_cells:
        for f in fixtures_by_cell.get(cell, ()):
            state[f.id] = f.state
    for fid in log.fixtures:
        f = fixtures[fid]
        if f.cell in near_new and (snapshot is None or snapshot.fixtures.get(fid) != f.state):
            state[fid] = f.state
    body = _body(moved, joined, left, [[fid, value] for fid, value in state.items()], fixtures_key)
    if body:
        deliveries.append(Delivery([pid], body))


class _Changers:
    """The lists of a cell changer's personal delivery, built from per-cell pieces shared within a step.

    A changer's old view was the players of its old neighbourhood, its new view is its new neighbourhood.
    Players who stayed in their cell ("settled") are seen before iff their cell is in the old
    neighbourhood and after iff it is in the new one, so their entries come whole per cell: the movers'
    ``moved`` entries of the cells in both (the step's own lists), ``joined`` of the cells only in the new,
    ``left`` of the cells only in the old (made once per cell per step, however many changers need them).
    The few others (changers, joiners, departed) are checked one by one, as the general algorithm does.
    The result equals the general one's (``FAST = False``), up to the order of the entries.
    """

    __slots__ = ("departed", "fresh", "gone_ids", "members", "moved_set", "players", "special", "src",
                 "unsettled", "was_in")

    def __init__(self, players: Mapping[int, Tracked], members: Mapping[int, set[int]],
                 src: dict[int, _Bucket], was_in: dict[int, list[int]], unsettled: set[int],
                 departed: Mapping[int, int], moved_set: set[int]) -> None:
        self.players = players
        self.members = members
        self.src = src
        self.was_in = was_in
        self.unsettled = unsettled
        self.departed = departed
        self.moved_set = moved_set
        self.special = unsettled | departed.keys()
        self.fresh: dict[int, list] = {}
        self.gone_ids: dict[int, list] = {}

    def _settled(self, cell: int) -> list[int]:
        here = self.members.get(cell)
        if not here:
            return []
        unsettled = self.unsettled
        return [q for q in here if q not in unsettled] if unsettled else list(here)

    def lists(self, pid: int, near_old: frozenset[int], near_new: frozenset[int]) -> tuple[list, list, list]:
        src, players = self.src, self.players
        moved: list = []
        joined: list = []
        left: list = []
        for cell in near_old & near_new:
            b = src.get(cell)
            if b is not None and b[0]:
                moved += b[0]
        for cell in near_new - near_old:
            found = self.fresh.get(cell)
            if found is None:
                found = self.fresh[cell] = [[q, o.name, o.x, o.y] for q in self._settled(cell)
                                            for o in (players[q],)]
            joined += found
        for cell in near_old - near_new:
            found = self.gone_ids.get(cell)
            if found is None:
                found = self.gone_ids[cell] = self._settled(cell)
            left += found
        was_special: set[int] = set()
        for cell in near_old:
            gone = self.was_in.get(cell)
            if gone:
                was_special.update(gone)
        for q in self.special:
            o = players.get(q)
            now_in = o is not None and o.cell in near_new
            was = q in was_special
            if now_in and not was:
                joined.append([q, o.name, o.x, o.y])   # type: ignore[union-attr]
            elif was and not now_in:
                left.append(q)
            elif was and now_in and q in self.moved_set:
                moved.append([q, o.x, o.y])   # type: ignore[union-attr]
        return moved, joined, left
