"""Room core with a fake clock: movement, attacks, respawn and area-of-interest deliveries."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gameserver.game import AttackOutcome, Delivery, GameError, MobSpec, Room, RoomSpec, Rules

RULES = Rules()


def open_room(width: float = 1000, height: float = 1000, mobs: tuple[MobSpec, ...] = (), **rules) -> Room:
    return Room(RoomSpec("test", width, height, mobs), Rules(**rules), random.Random(7))


def join(room: Room, name: str, x: float, y: float, now: float = 0.0) -> int:
    pid = room.add_player(name, x, y, now)
    room.view_for(pid)  # what the server does right after add_player
    return pid


def by_pid(deliveries: list[Delivery]) -> dict[int, dict]:
    """Receiver -> body; also checks nobody is in two deliveries."""
    out: dict[int, dict] = {}
    for delivery in deliveries:
        for pid in delivery.pids:
            assert pid not in out, f"player {pid} in two deliveries"
            out[pid] = delivery.body
    return out


# --- movement ----------------------------------------------------------------------------------------------


def test_move_within_the_limit_reaches_the_target_exactly() -> None:
    room = open_room()
    pid = room.add_player("a", 100, 100, now=0.0)
    assert room.move(pid, 250, 180, now=1.0) == (250, 180)
    assert room.position(pid) == (250, 180)


def test_move_beyond_the_limit_goes_the_allowed_distance_along_the_line() -> None:
    room = open_room()
    pid = room.add_player("a", 100, 100, now=0.0)
    assert room.move(pid, 900, 100, now=0.5) == (250, 100)  # 300 u/s x 0.5 s
    x, y = room.move(pid, 250 + 800, 100 + 600, now=0.7)  # 3-4-5 direction, 60 units
    assert (x, y) == pytest.approx((298, 136))


def test_move_after_a_long_idle_is_capped_at_one_second() -> None:
    room = open_room()
    pid = room.add_player("a", 0, 500, now=0.0)
    assert room.move(pid, 1000, 500, now=60.0) == (300, 500)
    assert room.move(pid, 1000, 500, now=60.0) == (300, 500)  # same instant: no budget left
    assert room.move(pid, 1000, 500, now=60.1) == pytest.approx((330, 500))


def test_clock_going_backwards_allows_no_movement() -> None:
    room = open_room()
    pid = room.add_player("a", 500, 500, now=10.0)
    assert room.move(pid, 600, 500, now=9.0) == (500, 500)


def test_positions_are_clamped_to_the_room() -> None:
    room = open_room(1000, 800)
    pid = room.add_player("a", -50, 900, now=0.0)
    assert room.position(pid) == (0, 800)
    assert room.move(pid, -100, 700, now=1.0) == (0, 700)  # target outside, within reach
    # 300 units toward (1000, 1800): the line leaves the room, the position is clamped afterwards
    x, y = room.move(pid, 1000 + 0, 700 + 1000, now=2.0)
    assert y == 800 and x == pytest.approx(300 * 1000 / math.hypot(1000, 1000))
    assert room.move(pid, 1000, 800, now=10.0) == (pytest.approx(512.13, abs=0.01), 800)


def test_bad_coordinates_are_survived() -> None:
    room = open_room()
    pid = room.add_player("a", math.nan, math.inf, now=0.0)
    assert room.position(pid) == (500, 1000)
    assert room.move(pid, math.nan, 900, now=1.0) == (500, 900)
    assert room.move(pid, math.inf, 900, now=2.0) == (800, 900)
    assert room.move(pid, -math.inf, -math.inf, now=3.0) == pytest.approx(
        (800 - 300 / 2**0.5, 900 - 300 / 2**0.5)
    )


def test_own_position_is_reported_when_changed_or_corrected() -> None:
    room = open_room()
    pid = join(room, "a", 1000, 500)
    room.step(0.0)
    room.move(pid, 1200, 500, now=1.0)  # pushes against the wall: stays, but the client must learn it
    assert by_pid(room.step(1.0)) == {pid: {"moved": [[pid, 1000, 500]]}}
    room.move(pid, 1000, 500, now=2.0)  # exactly where it is: nothing new
    assert room.step(2.0) == []


def test_unknown_player_is_not_in_room_and_double_remove_is_harmless() -> None:
    room = open_room()
    with pytest.raises(GameError) as err:
        room.move(42, 1, 1, now=0.0)
    assert err.value.code == "not_in_room"
    pid = room.add_player("a", 1, 1, now=0.0)
    room.remove_player(pid)
    room.remove_player(pid)
    assert len(room) == 0 and pid not in room


# --- attacks -----------------------------------------------------------------------------------------------


def mob_room(**rules) -> Room:
    mobs = (MobSpec(1, "slime", 500, 500, hp=40, xp=10), MobSpec(2, "wolf", 100, 100, hp=60, xp=25))
    return open_room(mobs=mobs, **rules)


def error_code(room: Room, pid: int, mob: int, now: float) -> str:
    with pytest.raises(GameError) as err:
        room.attack(pid, mob, now)
    return err.value.code


def test_attack_checks_run_in_order_no_such_mob_out_of_range_cooldown() -> None:
    room = mob_room()
    pid = room.add_player("a", 500, 540, now=0.0)
    assert error_code(room, pid, 99, 0.0) == "no_such_mob"
    assert error_code(room, pid, 2, 0.0) == "out_of_range"
    hit = room.attack(pid, 1, 0.0)
    assert error_code(room, pid, 99, 0.1) == "no_such_mob"  # unknown mob beats cooldown
    assert error_code(room, pid, 2, 0.1) == "out_of_range"  # range beats cooldown
    assert error_code(room, pid, 1, 0.1) == "cooldown"
    assert hit.hp == 40 - hit.dmg


def test_range_is_inclusive_at_exactly_attack_range() -> None:
    room = mob_room()
    pid = room.add_player("a", 500, 564, now=0.0)
    room.attack(pid, 1, 0.0)
    room.move(pid, 500, 564.5, now=1.0)
    assert error_code(room, pid, 1, 1.0) == "out_of_range"


def test_cooldown_starts_only_with_a_hit() -> None:
    room = mob_room()
    pid = room.add_player("a", 500, 600, now=0.0)
    assert error_code(room, pid, 1, 0.0) == "out_of_range"
    room.move(pid, 500, 500, now=0.5)
    room.attack(pid, 1, 0.5)  # the refused attack did not start a cooldown
    assert error_code(room, pid, 1, 0.749) == "cooldown"
    assert error_code(room, pid, 1, 0.7) == "cooldown"  # refused attacks do not extend it
    room.attack(pid, 1, 0.75)


def test_damage_is_within_bounds_and_kill_reports_hitters_in_first_hit_order() -> None:
    room = mob_room()
    a = room.add_player("alice", 500, 500, now=0.0)
    b = room.add_player("bob", 510, 500, now=0.0)
    c = room.add_player("carol", 490, 500, now=0.0)
    outcomes: list[AttackOutcome] = []
    now = 0.0
    order = [b, a, b, c, a, b, c, a]
    for pid in order:
        outcome = room.attack(pid, 1, now)
        outcomes.append(outcome)
        if outcome.killed:
            break
        now += 0.25
    killing = outcomes[-1]
    assert all(RULES.dmg_min <= o.dmg <= RULES.dmg_max for o in outcomes)
    assert [o.killed for o in outcomes] == [False] * (len(outcomes) - 1) + [True]
    assert killing.hp == 0 and killing.xp == 10
    assert killing.killer == room.name_of(order[len(outcomes) - 1])
    names = {a: "alice", b: "bob", c: "carol"}
    first_hits = list(dict.fromkeys(names[pid] for pid in order[: len(outcomes)]))
    assert killing.hitters == tuple(first_hits)
    assert all(o.hitters == () and o.xp == 0 for o in outcomes[:-1])
    assert sum(o.dmg for o in outcomes[:-1]) < 40 <= sum(o.dmg for o in outcomes)


def test_hitters_who_left_still_count_and_a_new_life_starts_fresh() -> None:
    room = mob_room(dmg_min=15, dmg_max=15)
    a = room.add_player("alice", 500, 500, now=0.0)
    b = room.add_player("bob", 500, 500, now=0.0)
    room.attack(a, 1, 0.0)
    room.remove_player(a)
    room.attack(b, 1, 0.0)
    kill = room.attack(b, 1, 0.25)
    assert (kill.killed, kill.hitters, kill.killer) == (True, ("alice", "bob"), "bob")
    room.step(5.25)
    room.attack(b, 1, 6.0)
    room.attack(b, 1, 7.0)
    assert room.attack(b, 1, 8.0).hitters == ("bob",)


def test_dead_mob_is_no_such_mob_until_it_respawns_at_full_hp() -> None:
    room = mob_room(dmg_min=20, dmg_max=20)
    pid = join(room, "a", 500, 500)
    room.attack(pid, 1, 0.0)
    assert room.attack(pid, 1, 1.0).killed  # died at t=1
    assert error_code(room, pid, 1, 2.0) == "no_such_mob"
    assert by_pid(room.step(1.0)) == {pid: {"mobs": [[1, 0]]}}
    assert room.step(5.999) == []
    assert error_code(room, pid, 1, 5.999) == "no_such_mob"
    assert by_pid(room.step(6.0)) == {pid: {"mobs": [[1, 40]]}}
    assert room.mob_hp(1) == 40
    assert room.attack(pid, 1, 6.0).hp == 20


# --- areas of interest -------------------------------------------------------------------------------------


def test_empty_room_and_quiet_room_produce_no_deliveries() -> None:
    room = mob_room()
    assert room.step(0.0) == []
    join(room, "a", 100, 100)
    join(room, "b", 900, 900)
    room.step(0.0)
    assert room.step(0.05) == []
    assert room.step(10.0) == []


def test_players_of_one_cell_share_one_delivery_object() -> None:
    room = open_room()
    a = join(room, "a", 510, 510)
    b = join(room, "b", 520, 520)
    c = join(room, "c", 600, 600)
    mover = join(room, "d", 300, 300)  # next cell diagonally
    room.step(0.0)
    room.move(mover, 310, 300, now=1.0)
    deliveries = room.step(1.0)
    assert len(deliveries) == 2
    shared = next(d for d in deliveries if a in d.pids)
    assert sorted(shared.pids) == [a, b, c]
    assert shared.body == {"moved": [[mover, 310, 300]]}
    # the mover's cell is another group: its own delivery object (same news), and nobody gets two
    own = next(d for d in deliveries if mover in d.pids)
    assert own is not shared and own.pids == [mover] and own.body == {"moved": [[mover, 310, 300]]}
    assert sorted(by_pid(deliveries)) == sorted([a, b, c, mover])


def test_join_is_seen_by_neighbours_only_and_the_joiner_is_not_told_twice() -> None:
    room = open_room(2000, 2000)
    near = join(room, "near", 600, 600)
    far = join(room, "far", 1900, 1900)
    room.step(0.0)
    new = room.add_player("new", 620, 600, now=0.1)
    view = room.view_for(new)
    assert sorted(p[0] for p in view["players"]) == [near, new]
    assert view["bounds"] == [2000.0, 2000.0]
    got = by_pid(room.step(0.1))
    assert got == {near: {"joined": [[new, "new", 620, 600]]}}  # nothing new for the joiner, nothing for far
    assert far not in got


def test_joiner_gets_what_changed_after_its_snapshot() -> None:
    room = open_room()
    old = join(room, "old", 500, 500)
    room.step(0.0)
    new = join(room, "new", 510, 500, now=0.5)
    room.move(old, 540, 500, now=0.5)
    late = join(room, "late", 520, 500, now=0.5)
    got = by_pid(room.step(0.5))
    assert got[new] == {"moved": [[old, 540, 500]], "joined": [[late, "late", 520, 500]]}
    assert late not in got  # its snapshot already showed all of that
    assert sorted(got[old]["joined"]) == [[new, "new", 510, 500], [late, "late", 520, 500]]
    assert got[old]["moved"] == [[old, 540, 500]]


def test_walking_into_view_and_out_again_yields_joined_and_left_on_both_sides() -> None:
    room = open_room(3000, 1000)
    watcher = join(room, "watcher", 100, 100)  # cell (0, 0): sees columns 0..1, x < 500
    walker = join(room, "walker", 760, 100)  # cell (3, 0)
    room.step(0.0)
    room.move(walker, 700, 100, now=1.0)  # cell (2, 0): still out of view
    assert by_pid(room.step(1.0)) == {walker: {"moved": [[walker, 700, 100]]}}
    room.move(walker, 480, 100, now=2.0)  # cell (1, 0): in view
    got = by_pid(room.step(2.0))
    assert got[watcher] == {"joined": [[walker, "walker", 480, 100]]}
    assert got[walker] == {"moved": [[walker, 480, 100]], "joined": [[watcher, "watcher", 100, 100]]}
    room.move(walker, 600, 100, now=3.0)  # back to cell (2, 0)
    got = by_pid(room.step(3.0))
    assert got[watcher] == {"left": [walker]}
    assert got[walker] == {"moved": [[walker, 600, 100]], "left": [watcher]}


def test_removal_yields_left_to_neighbours_only() -> None:
    room = open_room(3000, 1000)
    a = join(room, "a", 100, 100)
    b = join(room, "b", 200, 100)
    far = join(room, "far", 2900, 100)
    room.step(0.0)
    room.remove_player(b)
    assert by_pid(room.step(0.1)) == {a: {"left": [b]}}
    room.remove_player(far)
    assert room.step(0.2) == []


def test_join_and_leave_within_one_step_is_invisible() -> None:
    room = open_room()
    a = join(room, "a", 500, 500)
    room.step(0.0)
    ghost = join(room, "ghost", 510, 500)
    room.move(ghost, 520, 500, now=0.1)
    room.remove_player(ghost)
    assert room.step(0.1) == []
    assert [list(e) for e in room.view_for(a)["players"]] == [[a, "a", 500, 500]]   # entries are tuples


def test_mob_hp_changes_reach_only_neighbourhoods_of_the_mob() -> None:
    mobs = (MobSpec(1, "slime", 100, 100, hp=40, xp=10),)
    room = open_room(3000, 1000, mobs=mobs)
    hitter = join(room, "hitter", 120, 100)
    near = join(room, "near", 600, 600)  # cell (2, 2): mob cell (0, 0) is not a neighbour
    beside = join(room, "beside", 400, 400)  # cell (1, 1): neighbour
    room.step(0.0)
    outcome = room.attack(hitter, 1, 0.5)
    got = by_pid(room.step(0.5))
    assert set(got) == {hitter, beside}
    assert got[hitter] == {"mobs": [[1, outcome.hp]]}
    assert near not in got
    assert len(room.view_for(near)["mobs"]) == 1  # the snapshot lists every mob of the room


def test_walking_into_view_of_a_mob_reports_its_current_hp() -> None:
    mobs = (MobSpec(1, "slime", 100, 100, hp=40, xp=10),)
    room = open_room(3000, 1000, mobs=mobs)
    hitter = join(room, "hitter", 120, 100)
    walker = join(room, "walker", 800, 100)  # cell (3, 0): mob out of view
    room.step(0.0)
    hp = room.attack(hitter, 1, 0.0).hp
    room.step(0.0)
    room.move(walker, 700, 100, now=1.0)  # cell (2, 0): still out of view
    assert by_pid(room.step(1.0)) == {walker: {"moved": [[walker, 700, 100]]}}
    room.move(walker, 450, 100, now=2.0)  # cell (1, 0): mob in view
    got = by_pid(room.step(2.0))
    assert got[walker]["mobs"] == [[1, hp]]
    assert got[walker]["joined"] == [[hitter, "hitter", 120, 100]]


def test_players_on_cell_boundaries_and_room_edges() -> None:
    room = open_room(1000, 1000)
    corner = join(room, "corner", 1000, 1000)  # cell (3, 3)
    edge = join(room, "edge", 500, 500)  # exactly on a boundary: cell (2, 2)
    lower = join(room, "lower", 499.9, 499.9)  # cell (1, 1): out of the corner's view
    snapshot = {p[0] for p in room.view_for(corner)["players"]}
    assert snapshot == {corner, edge}
    assert {p[0] for p in room.view_for(lower)["players"]} == {lower, edge}
    room.step(0.0)
    room.move(lower, 500, 500, now=1.0)  # onto the boundary: cell (2, 2), now in the corner's view
    got = by_pid(room.step(1.0))
    assert got[corner] == {"joined": [[lower, "lower", 500, 500]]}
    assert got[edge] == {"moved": [[lower, 500, 500]]}
    assert got[lower] == {"moved": [[lower, 500, 500]], "joined": [[corner, "corner", 1000, 1000]]}


def test_walking_out_and_back_within_one_step_is_a_plain_move() -> None:
    room = open_room(3000, 1000)
    watcher = join(room, "watcher", 100, 100)
    walker = join(room, "walker", 480, 100)  # cell (1, 0)
    room.step(0.0)
    room.move(walker, 700, 100, now=1.0)  # cell (2, 0): out of the watcher's view
    room.move(walker, 490, 100, now=2.0)  # back to cell (1, 0) before the step
    got = by_pid(room.step(2.0))
    assert got == {watcher: {"moved": [[walker, 490, 100]]}, walker: {"moved": [[walker, 490, 100]]}}


def test_resnapshot_resets_the_base_of_the_next_tick() -> None:
    room = open_room()
    a = join(room, "a", 500, 500)
    b = join(room, "b", 510, 500)
    room.step(0.0)
    room.move(b, 520, 500, now=0.5)
    room.view_for(a)  # e.g. a resume re-sends `joined` with b already at 520
    room.move(b, 530, 500, now=0.6)
    got = by_pid(room.step(0.6))
    assert got[a] == {"moved": [[b, 530, 500]]}


# --- model-based: every client's accumulated view equals its area of interest ------------------------------

CELL = 250.0
WIDTH, HEIGHT = 1100.0, 800.0  # 5 x 4 cells, the last column and row partial
MOBS = (
    MobSpec(1, "slime", 50, 50, hp=30, xp=10),
    MobSpec(2, "wolf", 1100, 800, hp=40, xp=20),
    MobSpec(3, "bat", 600, 400, hp=20, xp=5),
)
coords = st.floats(min_value=-200, max_value=1300, allow_nan=False)


def truth_cell(x: float, y: float) -> tuple[int, int]:
    cols, rows = math.ceil(WIDTH / CELL), math.ceil(HEIGHT / CELL)
    return min(cols - 1, int(x // CELL)), min(rows - 1, int(y // CELL))


def in_view(a: tuple[float, float], b: tuple[float, float]) -> bool:
    (ax, ay), (bx, by) = truth_cell(*a), truth_cell(*b)
    return abs(ax - bx) <= 1 and abs(ay - by) <= 1


class ClientViews(RuleBasedStateMachine):
    """Random joins, moves, attacks, re-snapshots, leaves and steps. After each step every player's view,
    built only from its snapshot and deliveries, must equal the players in its area of interest, and its mob
    hp must be right for the mobs in its area."""

    def __init__(self) -> None:
        super().__init__()
        rules = Rules(respawn_seconds=0.5, attack_range=300.0, attack_cooldown=0.0)
        self.room = Room(RoomSpec("prop", WIDTH, HEIGHT, MOBS), rules, random.Random(1))
        self.now = 0.0
        self.names = 0
        self.views: dict[int, dict[int, tuple[str, float, float]]] = {}
        self.mob_views: dict[int, dict[int, int]] = {}
        self.stepped = True

    def snapshot(self, pid: int) -> None:
        view = self.room.view_for(pid)
        self.views[pid] = {p[0]: (p[1], p[2], p[3]) for p in view["players"]}
        self.mob_views[pid] = {m[0]: m[4] for m in view["mobs"]}

    @rule(x=coords, y=coords)
    def join(self, x: float, y: float) -> None:
        self.names += 1
        pid = self.room.add_player(f"p{self.names}", x, y, self.now)
        self.snapshot(pid)
        self.stepped = False

    @precondition(lambda self: self.views)
    @rule(data=st.data())
    def resnapshot(self, data: st.DataObject) -> None:
        self.snapshot(data.draw(st.sampled_from(sorted(self.views))))
        self.stepped = False

    @precondition(lambda self: self.views)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.views)))
        self.room.remove_player(pid)
        del self.views[pid], self.mob_views[pid]
        self.stepped = False

    @precondition(lambda self: self.views)
    @rule(data=st.data(), x=coords, y=coords)
    def move(self, data: st.DataObject, x: float, y: float) -> None:
        pid = data.draw(st.sampled_from(sorted(self.views)))
        self.room.move(pid, x, y, self.now)
        self.stepped = False

    @precondition(lambda self: self.views)
    @rule(data=st.data(), mob=st.sampled_from([1, 2, 3]))
    def attack(self, data: st.DataObject, mob: int) -> None:
        pid = data.draw(st.sampled_from(sorted(self.views)))
        try:
            self.room.attack(pid, mob, self.now)
        except GameError:
            pass
        self.stepped = False

    @rule(dt=st.sampled_from([0.05, 0.3, 1.0]))
    def wait(self, dt: float) -> None:
        """Inputs of one tick arrive at different times: time passes without a step."""
        self.now += dt

    @rule(dt=st.sampled_from([0.0, 0.05, 0.3, 0.6, 1.0, 2.5]))
    def step(self, dt: float) -> None:
        self.now += dt
        received: set[int] = set()
        for delivery in self.room.step(self.now):
            assert delivery.body, "empty delivery"
            assert set(delivery.body) <= {"moved", "joined", "left", "mobs"}
            assert all(delivery.body.values()), "empty list in body"
            for pid in delivery.pids:
                assert pid in self.views, "delivery to a player not in the room"
                assert pid not in received, "player in two deliveries"
                received.add(pid)
                self.apply(pid, delivery.body)
        self.stepped = True

    def apply(self, pid: int, body: dict) -> None:
        view = self.views[pid]
        for q in body.get("left", ()):
            assert q in view, "left for a player not in view"
            del view[q]
        for q, name, x, y in body.get("joined", ()):
            assert q not in view, "joined for a player already in view"
            view[q] = (name, x, y)
        for q, x, y in body.get("moved", ()):
            assert q in view, "moved for a player not in view"
            view[q] = (view[q][0], x, y)
        for mid, hp in body.get("mobs", ()):
            self.mob_views[pid][mid] = hp

    @invariant()
    def views_match_areas_of_interest(self) -> None:
        if not self.stepped:
            return
        room = self.room
        for pid, view in self.views.items():
            me = room.position(pid)
            expected = {
                q: (room.name_of(q), *room.position(q))
                for q in room.player_ids()
                if in_view(me, room.position(q))
            }
            assert view == expected
            for mob in MOBS:
                if in_view(me, (mob.x, mob.y)):
                    assert self.mob_views[pid][mob.id] == room.mob_hp(mob.id)


TestClientViews = ClientViews.TestCase
TestClientViews.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
