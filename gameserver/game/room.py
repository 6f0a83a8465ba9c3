"""`Room`: the pure game-rules core of one room (players, mobs, moves, attacks, respawn, tick deliveries).

No I/O, no clock, no global randomness: the caller passes `now` (seconds, any monotonic origin) and may inject
a `random.Random`, so every rule is testable with a fake clock. Not thread-safe: one room runner owns it and
serialises all calls (inputs of a tick in order, then `step`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..rooms.aoi import AreaOfInterest, Delivery
from ..rooms.api import RoomError
from .mobs import Mob
from .players import Player
from .rules import MAX_HITS_TO_KILL, MAX_MOVE_SECONDS, Rules
from .world import MobSpec, RoomSpec

__all__ = ["AttackOutcome", "Delivery", "GameError", "MobSpec", "Room", "RoomSpec", "Rules"]

_FAR = 1e12  # finite stand-in for infinite move targets; far beyond any room, so the direction is kept


class GameError(RoomError):
    """A rule refused a player's input. `code` is the protocol error code: `no_such_mob`, `out_of_range`,
    `cooldown`, or `not_in_room` (the player id is not in this room)."""


@dataclass(frozen=True)
class AttackOutcome:
    """Result of an attack answered with `hit`. `hitters` and `xp` are filled only when `killed`: every name
    that hit this mob's life, in first-hit order, the killer (`killer`, the attacker) included; each of them
    is owed `xp`. Otherwise `hitters == ()` and `xp == 0`."""

    mob: int
    dmg: int
    hp: int
    killed: bool
    hitters: tuple[str, ...]
    xp: int
    killer: str = ""


class Room:
    """One room's state and rules. Player ids are small ints, never reused within a room."""

    def __init__(self, spec: RoomSpec, rules: Rules, rng: random.Random | None = None) -> None:
        for mob in spec.mobs:
            if mob.hp > MAX_HITS_TO_KILL * rules.dmg_min:
                raise ValueError(
                    f"room {spec.name}: mob {mob.id} ({mob.kind}) has hp {mob.hp} > {MAX_HITS_TO_KILL} x "
                    f"dmg_min {rules.dmg_min}; it must die within {MAX_HITS_TO_KILL} hits"
                )
        self.spec = spec
        self.rules = rules
        self.name = spec.name
        self.bounds = (float(spec.width), float(spec.height))
        self._speed = rules.speed
        self._rng = rng if rng is not None else random.Random()
        self._aoi = AreaOfInterest(spec.width, spec.height, rules.cell_size, fixtures_key="mobs")
        self._players: dict[int, Player] = {}
        self._next_pid = 1
        self._mobs: dict[int, Mob] = {}
        for mob_spec in spec.mobs:
            mob = Mob(mob_spec)
            self._mobs[mob.id] = mob
            self._aoi.add_fixture(mob.id, mob.x, mob.y, mob.hp)
        self._dead: dict[int, Mob] = {}

    # --- players -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._players)

    def __contains__(self, pid: object) -> bool:
        return pid in self._players

    def player_ids(self) -> list[int]:
        return list(self._players)

    def name_of(self, pid: int) -> str:
        return self._player(pid).name

    def add_player(self, name: str, x: float, y: float, now: float, pid: int | None = None) -> int:
        """Place a player at (x, y) clamped to the room; returns its id (``pid`` when given: the caller
        numbers players, and must not reuse an id of a player still here). Others see it `joined` at the
        next step. Call `view_for(pid)` right after for its `joined` snapshot (its first tick is relative to
        it). The speed limit starts counting at `now`."""
        x, y = self._clamp(self._finite(x, self.bounds[0] / 2), self._finite(y, self.bounds[1] / 2))
        if pid is None:
            pid = self._next_pid
        elif pid in self._players:
            raise ValueError(f"player id {pid} is already in {self.name}")
        self._next_pid = max(self._next_pid, pid + 1)
        self._players[pid] = Player(pid, name, x, y, now)
        self._aoi.add(pid, name, x, y)
        return pid

    def remove_player(self, pid: int) -> None:
        """Take the player out (leave, disconnect); players that had it in view get `left` at the next step.
        Unknown ids are ignored, so a double leave is harmless. Its hits still count for the mobs' XP."""
        if self._players.pop(pid, None) is not None:
            self._aoi.remove(pid)

    def position(self, pid: int) -> tuple[float, float]:
        p = self._player(pid)
        return p.x, p.y

    def move(self, pid: int, x: float, y: float, now: float) -> tuple[float, float]:
        """Move toward (x, y) under the speed limit; returns the new position. Never dropped.

        The player goes along the line toward the target by at most
        `speed * min(1 s, now - last move or join)` (the whole way if the target is closer), then the position
        is clamped to `[0, w] x [0, h]`. Every move is accepted and restarts the speed-limit clock. NaN
        coordinates keep the current one; infinities aim far away in that direction. When the result is not
        where the client asked to go (limited or clamped), the player is reported in `moved` even if it
        did not actually move, so the client can correct itself.
        """
        # Hot path (every player, several times a second): helpers inlined.
        p = self._players.get(pid)
        if p is None:
            raise GameError("not_in_room", f"player {pid} is not in {self.name}")
        px, py = p.x, p.y
        tx = px if x != x else min(max(float(x), -_FAR), _FAR)  # x != x: NaN
        ty = py if y != y else min(max(float(y), -_FAR), _FAR)
        elapsed = now - p.last_move
        if elapsed > 0:
            p.last_move = now
        allowed = self._speed * (elapsed if elapsed < MAX_MOVE_SECONDS else MAX_MOVE_SECONDS)
        dx = tx - px
        dy = ty - py
        dist = math.hypot(dx, dy)
        if dist > allowed:
            scale = allowed / dist if allowed > 0 else 0.0
            nx, ny = px + dx * scale, py + dy * scale
        else:
            nx, ny = tx, ty
        w, h = self.bounds
        nx = 0.0 if nx < 0.0 else (w if nx > w else nx)
        ny = 0.0 if ny < 0.0 else (h if ny > h else ny)
        if nx != px or ny != py or nx != tx or ny != ty:
            p.x, p.y = nx, ny
            self._aoi.move(pid, nx, ny)
        return nx, ny

    # --- mobs ----------------------------------------------------------------------------------------------

    def mob_hp(self, mob_id: int) -> int:
        return self._mobs[mob_id].hp

    def attack(self, pid: int, mob_id: int, now: float) -> AttackOutcome:
        """One attack. Checks, in order: `no_such_mob` (unknown or dead), `out_of_range` (distance >
        `attack_range`), `cooldown` (`now` < last hit + `attack_cooldown`); a refused attack changes nothing.
        A hit deals `randint(dmg_min, dmg_max)` (the reported `dmg`; `hp` never goes below 0) and starts the
        cooldown. The killing blow leaves the mob dead until `now + respawn_seconds` (see `step`)."""
        p = self._player(pid)
        mob = self._mobs.get(mob_id)
        if mob is None or not mob.alive:
            raise GameError("no_such_mob", f"no mob {mob_id} alive in {self.name}")
        if math.hypot(mob.x - p.x, mob.y - p.y) > self.rules.attack_range:
            raise GameError("out_of_range", f"mob {mob_id} is farther than {self.rules.attack_range:g} units")
        if now < p.next_attack:
            raise GameError("cooldown", f"next attack in {p.next_attack - now:.3f} s")
        p.next_attack = now + self.rules.attack_cooldown
        dmg = self._rng.randint(self.rules.dmg_min, self.rules.dmg_max)
        killed = mob.take_hit(p.name, dmg, now, self.rules.respawn_seconds)
        self._aoi.set_state(mob_id, mob.hp)
        if not killed:
            return AttackOutcome(mob_id, dmg, mob.hp, False, (), 0, p.name)
        self._dead[mob_id] = mob
        return AttackOutcome(mob_id, dmg, 0, True, tuple(mob.hitters), mob.spec.xp, p.name)

    # --- views and ticks -----------------------------------------------------------------------------------

    def view_for(self, pid: int) -> dict:
        """Snapshot for the `joined` message: players in the player's area of interest (itself included),
        every mob of the room, the bounds. The player's next tick is computed relative to exactly this
        snapshot (the server sends it as `joined`)."""
        self._player(pid)
        seen = self._aoi.view(pid)
        return {
            "players": [q.entry for q in seen],   # shared (id, name, x, y) tuples: encoded as arrays
            "mobs": [[m.id, m.kind, m.x, m.y, m.hp] for m in self._mobs.values()],
            "bounds": [self.bounds[0], self.bounds[1]],
        }

    def step(self, now: float) -> list[Delivery]:
        """End of a tick: respawn the mobs that are due (`now >= died_at + respawn_seconds`, full hp, same id
        and place), then return the deliveries for everything that changed since the previous step (see
        `gameserver.rooms.aoi`). Bodies are shared between deliveries: treat them as read-only."""
        if self._dead:
            for mob in [m for m in self._dead.values() if m.respawn_at is not None and now >= m.respawn_at]:
                mob.respawn()
                del self._dead[mob.id]
                self._aoi.set_state(mob.id, mob.hp)
        return self._aoi.deliveries()

    def mobs_alive(self) -> int:
        """How many mobs are alive now (the monitor shows it)."""
        return len(self._mobs) - len(self._dead)

    # --- helpers -------------------------------------------------------------------------------------------

    def _player(self, pid: int) -> Player:
        p = self._players.get(pid)
        if p is None:
            raise GameError("not_in_room", f"player {pid} is not in {self.name}")
        return p

    def _clamp(self, x: float, y: float) -> tuple[float, float]:
        w, h = self.bounds
        return min(max(x, 0.0), w), min(max(y, 0.0), h)

    @staticmethod
    def _finite(value: float, fallback: float) -> float:
        value = float(value)
        if math.isnan(value):
            return fallback
        return min(max(value, -_FAR), _FAR)
