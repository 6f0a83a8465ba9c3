"""Room types used by the room API tests (imported by ``module:Class`` strings and directly)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from gameserver.rooms import Player, Room, RoomError, on_message


class Say(BaseModel):
    text: str = Field(min_length=1, max_length=50)
    to_all: bool = False


class Boom(BaseModel):
    pass


class Earn(BaseModel):
    amount: int = Field(ge=0, le=10_000)


class Coins(BaseModel):
    add: int


class EchoRoom(Room):
    """Echoes ``say`` back (or to everyone), counts ticks, records its hooks, grants XP on ``earn``."""

    tick_rate = 25

    def on_create(self) -> None:
        self.created = (self.name, dict(self.options))
        self.ticks = 0
        self.log: list[tuple[str, str]] = []

    def on_join(self, player: Player) -> dict[str, Any]:
        self.log.append(("join", player.name))
        return {"greeting": self.options.get("greeting", "hi"), "count": len(self.players)}

    def on_leave(self, player: Player) -> None:
        self.log.append(("leave", player.name))
        self.broadcast({"t": "gone", "name": player.name})   # the leaver must not get this

    def on_tick(self, now: float) -> None:
        self.ticks += 1

    @on_message("say", Say)
    def say(self, player: Player, msg: Say) -> dict[str, Any] | None:
        if msg.text == "refuse":
            raise RoomError("not_allowed", "that word is not allowed")
        if msg.to_all:
            self.broadcast({"t": "said", "by": player.id, "text": msg.text})
            return None
        return {"t": "echo", "text": msg.text, "you": player.id}

    @on_message("shout", Say)
    def shout(self, player: Player, msg: Say) -> None:
        self.broadcast({"t": "said", "by": player.id, "text": msg.text}, exclude=player)

    @on_message("boom", Boom)
    def boom(self, player: Player, msg: Boom) -> None:
        raise RuntimeError("kaboom in a handler")

    @on_message("earn", Earn)
    def earn(self, player: Player, msg: Earn) -> dict[str, Any]:
        self.grant_xp(player, msg.amount, "earned")
        return {"t": "earning", "amount": msg.amount}

    @on_message("coins", Coins)
    def coins(self, player: Player, msg: Coins) -> dict[str, Any]:
        player.data["coins"] = player.data.get("coins", 0) + msg.add
        return {"t": "coins", "coins": player.data["coins"]}

    def describe(self) -> dict[str, Any]:
        return {"ticks": self.ticks}


class OtherRoom(Room):
    """Another type: its own data namespace, no ``say``."""

    @on_message("coins", Coins)
    def coins(self, player: Player, msg: Coins) -> dict[str, Any]:
        player.data["coins"] = player.data.get("coins", 0) + msg.add
        return {"t": "coins", "coins": player.data["coins"]}


class Limits(BaseModel):
    size: int = Field(ge=1, le=10)


class StrictOptionsRoom(Room):
    options_model = Limits

    def on_create(self) -> None:
        self.size = self.settings.size


class FailingCreateRoom(Room):
    def on_create(self) -> None:
        raise ValueError("needs a 'map' option")


class FailingJoinRoom(Room):
    def on_join(self, player: Player) -> dict[str, Any]:
        raise RuntimeError("join hook bug")


class NotARoom:
    pass
