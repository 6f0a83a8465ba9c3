"""Tag, written on the game-author API: one player is "it" and tags another by running up to it.

Messages (client -> server):
    move {x, y}     walk toward (x, y) at up to `speed` units/s (positions show in `tick.moved`)
    tag  {target}   tag the player with id `target`: you must be "it", within `reach`, and not the one
                    who just tagged you (no tag-backs for `grace` seconds)

What the players get: `joined` with `players`, `bounds`, `it` and your `tags` so far; `tick` with
`moved`/`joined`/`left` (the area-of-interest helper); `tagged {by, it}` to everyone when "it" changes;
`xp` for every tag (granted durably with `grant_xp`). Each player's tag count lives in `player.data`,
saved by the server without any further call.

Run it:  gameserver serve --config examples/tag/server.toml
"""

from __future__ import annotations

import math
import random
from typing import Any

from pydantic import BaseModel, Field

from gameserver.rooms import AreaOfInterest, Player, Room, RoomError, on_message


class TagOptions(BaseModel):
    """The room's `[rooms.options]` table, checked at start-up."""

    width: float = Field(400.0, gt=0)
    height: float = Field(400.0, gt=0)
    speed: float = Field(200.0, gt=0)
    reach: float = Field(30.0, gt=0)
    grace: float = Field(1.0, ge=0)
    xp_per_tag: int = Field(10, ge=0)


class Move(BaseModel):
    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)


class Tag(BaseModel):
    target: int


class TagRoom(Room):
    tick_rate = 20
    options_model = TagOptions
    data_namespace = "tag"

    def on_create(self) -> None:
        o: TagOptions = self.settings
        self.o = o
        self.aoi = AreaOfInterest(o.width, o.height, cell_size=max(o.width, o.height))
        self.moved_at: dict[int, float] = {}
        self.it: int | None = None
        self.last_tagger: int | None = None
        self.tagged_at = -math.inf
        self.rng = random.Random(self.name)

    # -- players come and go ---------------------------------------------------------------------
    def on_join(self, player: Player) -> dict[str, Any]:
        x = self.rng.uniform(0, self.o.width)
        y = self.rng.uniform(0, self.o.height)
        self.aoi.add(player.id, player.name, x, y)
        self.moved_at[player.id] = self.now
        if self.it is None:
            self.it = player.id
        return self._view(player)

    def on_reconnect(self, player: Player) -> dict[str, Any]:
        return self._view(player)

    def on_leave(self, player: Player) -> None:
        self.aoi.remove(player.id)
        self.moved_at.pop(player.id, None)
        if self.it == player.id:   # "it" left: someone else is it now
            self._make_it(next(iter(self.players), None), by=None)

    def _view(self, player: Player) -> dict[str, Any]:
        seen = self.aoi.view(player.id)
        return {"players": [[p.id, p.name, p.x, p.y] for p in seen], "mobs": [],
                "bounds": [self.o.width, self.o.height], "it": self.it,
                "tags": player.data.get("tags", 0)}

    # -- messages ------------------------------------------------------------------------------------
    @on_message("move", Move)
    def move(self, player: Player, msg: Move) -> None:
        me = self.aoi.players[player.id]
        budget = self.o.speed * min(1.0, self.now - self.moved_at[player.id])
        self.moved_at[player.id] = self.now
        dx, dy = msg.x - me.x, msg.y - me.y
        dist = math.hypot(dx, dy)
        scale = 1.0 if dist <= budget else budget / dist
        x = min(max(me.x + dx * scale, 0.0), self.o.width)
        y = min(max(me.y + dy * scale, 0.0), self.o.height)
        self.aoi.move(player.id, x, y)

    @on_message("tag", Tag)
    def tag(self, player: Player, msg: Tag) -> dict[str, Any]:
        if player.id != self.it:
            raise RoomError("not_it", "only the player who is it can tag")
        target = self.aoi.players.get(msg.target)
        if target is None or msg.target == player.id:
            raise RoomError("no_such_player", f"no other player {msg.target} here")
        if msg.target == self.last_tagger and self.now - self.tagged_at < self.o.grace:
            raise RoomError("no_tag_backs", "you cannot tag back the one who just tagged you")
        me = self.aoi.players[player.id]
        if math.hypot(target.x - me.x, target.y - me.y) > self.o.reach:
            raise RoomError("out_of_reach", f"player {msg.target} is farther than {self.o.reach:g}")
        player.data["tags"] = player.data.get("tags", 0) + 1
        self.grant_xp(player, self.o.xp_per_tag, f"tag:{target.name}")
        self._make_it(msg.target, by=player.id)
        return {"t": "tag_ok", "it": msg.target, "tags": player.data["tags"]}

    def _make_it(self, pid: int | None, by: int | None) -> None:
        self.it, self.last_tagger, self.tagged_at = pid, by, self.now
        self.broadcast({"t": "tagged", "by": by, "it": pid})

    # -- every tick ------------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        for delivery in self.aoi.deliveries():
            self.send_tick(delivery.pids, delivery.body)

    def describe(self) -> dict[str, Any]:
        return {"it": self.it}
