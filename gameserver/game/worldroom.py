"""The built-in game as a room type: ``WorldRoom`` plays protocol v1's world on the public room API.

Every room configured without a ``type`` (the default world ``town``, ``forest``, ``dungeon`` included) is a
``WorldRoom``. It keeps the pure rules core (``gameserver.game.room.Room``: moves under the speed limit,
attacks, mobs, respawn, grid area of interest) and wires it to the API: ``move`` and ``attack`` are its
messages, a kill grants XP to every hitter with ``grant_xp``, each tick sends the core's deliveries with
``send_tick`` (one encode per delivery group). The wire bytes are protocol v1's, unchanged.

Options (built by ``gameserver.rooms.registry`` from the room's configuration): ``spec`` (a ``RoomSpec``:
size and mobs) and ``rules`` (``Rules``).
"""

from __future__ import annotations

from typing import Any

from shared import messages as m

from ..rooms.api import Player, Room, on_message
from .room import Room as GameRoom
from .rules import Rules
from .world import RoomSpec, spawn_point


class WorldRoom(Room):
    """Players walking among mobs; killing blows grant XP to every hitter."""

    data_namespace = "world"

    def on_create(self) -> None:
        spec = self.options.get("spec")
        rules = self.options.get("rules", Rules())
        if not isinstance(spec, RoomSpec) or not isinstance(rules, Rules):
            raise ValueError("a built-in room needs a RoomSpec 'spec' and Rules 'rules' option")
        self.state = GameRoom(spec, rules)
        self.spawn = spawn_point(spec)

    def spawn_point(self) -> tuple[float, float]:
        return self.spawn

    def on_join(self, player: Player) -> dict[str, Any]:
        x, y = (player.x, player.y) if player.returning else self.spawn
        state = self.state
        state.add_player(player.name, x, y, self.now, pid=player.id)
        player.place(*state.position(player.id))
        return state.view_for(player.id)

    def on_reconnect(self, player: Player) -> dict[str, Any]:
        return self.state.view_for(player.id)

    def on_leave(self, player: Player) -> None:
        self.state.remove_player(player.id)

    @on_message("move", m.Move)
    def move(self, player: Player, msg: m.Move) -> None:
        player.place(*self.state.move(player.id, msg.x, msg.y, self.now))

    @on_message("attack", m.Attack)
    def attack(self, player: Player, msg: m.Attack) -> dict[str, Any]:
        outcome = self.state.attack(player.id, msg.mob, self.now)
        if outcome.killed:
            player.kills += 1
            for name in outcome.hitters:
                self.grant_xp(name, outcome.xp, f"kill:{outcome.mob}")
        return {"t": "hit", "mob": outcome.mob, "dmg": outcome.dmg, "hp": outcome.hp}

    def on_tick(self, now: float) -> None:
        for delivery in self.state.step(now):
            self.send_tick(delivery.pids, delivery.body)

    def describe(self) -> dict[str, Any]:
        return {"mobs_alive": self.state.mobs_alive()}
