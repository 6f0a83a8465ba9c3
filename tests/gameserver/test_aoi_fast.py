"""The cell changers' fast path of the area of interest gives the same deliveries as the general algorithm
(seeded random walks, joins, leaves, snapshots and fixture changes on two identical AreaOfInterest)."""

from __future__ import annotations

import random

import pytest

from gameserver.rooms import aoi
from gameserver.rooms.aoi import AreaOfInterest


def normalized(deliveries: list[aoi.Delivery]) -> dict[int, dict[str, list]]:
    out: dict[int, dict[str, list]] = {}
    for d in deliveries:
        body = {key: sorted(value, key=repr) for key, value in d.body.items()}
        for pid in d.pids:
            assert pid not in out, "a player in two deliveries"
            out[pid] = body
    return out


@pytest.mark.parametrize("seed", range(12))
def test_fast_and_general_personal_deliveries_are_equal(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    side, cell = rng.choice([(1000.0, 250.0), (600.0, 100.0), (3000.0, 250.0)])
    pair = [AreaOfInterest(side, side, cell, fixtures_key="mobs") for _ in range(2)]
    for i in range(1, 6):
        x, y = rng.uniform(0, side), rng.uniform(0, side)
        for a in pair:
            a.add_fixture(i, x, y, 100)
    pos: dict[int, tuple[float, float]] = {}
    next_pid = 1
    changers = 0
    for _step in range(60):
        for _op in range(rng.randint(1, 40)):
            roll = rng.random()
            if roll < 0.15 or not pos:
                pid, next_pid = next_pid, next_pid + 1
                pos[pid] = (rng.uniform(0, side), rng.uniform(0, side))
                for a in pair:
                    a.add(pid, f"p{pid}", *pos[pid])
                if rng.random() < 0.7:   # most joiners get a snapshot (the joined reply)
                    for a in pair:
                        a.view(pid)
            elif roll < 0.22:
                pid = rng.choice(sorted(pos))
                del pos[pid]
                for a in pair:
                    a.remove(pid)
            elif roll < 0.25:
                pid = rng.choice(sorted(pos))
                for a in pair:
                    a.view(pid)
            elif roll < 0.3:
                fid, hp = rng.randint(1, 5), rng.randint(0, 100)
                for a in pair:
                    a.set_state(fid, hp)
            else:
                pid = rng.choice(sorted(pos))
                x, y = pos[pid]
                step = rng.choice([20.0, cell, 2 * cell])
                nx = min(max(x + rng.uniform(-step, step), 0.0), side)
                ny = min(max(y + rng.uniform(-step, step), 0.0), side)
                pos[pid] = (nx, ny)
                for a in pair:
                    a.move(pid, nx, ny)
        changers += sum(1 for pid, old in pair[0].log.prev_cell.items()
                        if old is not None and old != pair[0].players[pid].cell)
        monkeypatch.setattr(aoi, "FAST", True)
        fast = normalized(pair[0].deliveries())
        monkeypatch.setattr(aoi, "FAST", False)
        general = normalized(pair[1].deliveries())
        assert fast == general
    assert changers > 20   # the fast path really ran


def test_snapshots_share_one_entry_per_player_until_it_moves() -> None:
    """A join into a crowd must not allocate one small object per player seen (heap fragmentation made
    2,000 idle players in town cost ~36 KB each): snapshots list the players' own entry tuples."""
    a = AreaOfInterest(1000.0, 1000.0)
    for pid in range(1, 6):
        a.add(pid, f"p{pid}", 500.0, 500.0)
    first = {q.id: q.entry for q in a.view(1)}
    a.deliveries()
    second = {q.id: q.entry for q in a.view(2)}
    assert all(first[pid] is second[pid] for pid in first)
    assert first[3] == (3, "p3", 500.0, 500.0)
    a.move(3, 510.0, 500.0)
    assert a.players[3].entry == (3, "p3", 510.0, 500.0) and a.players[3].entry is not first[3]
