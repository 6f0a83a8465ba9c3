"""Configured rooms -> room types: import ``module:Class``, check it, build instances.

Start-up errors are one line naming the room (``ConfigError``): a type that cannot be imported, is not a
``gameserver.rooms.Room`` subclass, registers a message type of the session layer, or rejects its options
(``options_model`` validation, or ``on_create`` raising). Rooms without ``type`` are the built-in game
(``gameserver.game.worldroom.WorldRoom``), built from the room's size and mobs and ``[game.rules]``.

Room modules are imported with the current directory and the config file's directory on ``sys.path``
(like ``python -m``), so ``type = "mygame.rooms:EchoRoom"`` finds ``./mygame/rooms.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..config import ConfigError, RoomConfig, ServerConfig
from .api import SESSION_TYPES, Room

__all__ = ["RoomType", "create_room", "load_class", "room_types"]


@dataclass(frozen=True)
class RoomType:
    """One configured room: its class, options and limits (instances share it)."""

    name: str
    cls: type[Room]
    options: dict[str, Any] = field(default_factory=dict)
    settings: Any = None
    max_players: int | None = None
    tick_rate: float = 20.0
    idle_dispose: float = 30.0

    @property
    def messages(self) -> frozenset[str]:
        return frozenset(self.cls.messages)


def load_class(path: str, room: str, search: Sequence[str] = ()) -> type[Room]:
    """Import ``"module:Class"`` for room ``room``; a one-line ConfigError when it is not a Room type."""
    module_name, _, attr = path.partition(":")
    extra = [p for p in (os.getcwd(), *search) if p and p not in sys.path]
    sys.path[:0] = extra
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"room {room}: cannot import type {path!r}: {type(exc).__name__}: {exc}") from None
    finally:
        for p in extra:
            if p in sys.path:
                sys.path.remove(p)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"room {room}: type {path!r}: module {module_name} has no {attr!r}")
    return check_class(obj, room)


def check_class(obj: Any, room: str) -> type[Room]:
    if not (isinstance(obj, type) and issubclass(obj, Room)):
        raise ConfigError(f"room {room}: type {obj!r} is not a subclass of gameserver.rooms.Room")
    reserved = SESSION_TYPES & set(obj.messages)
    if reserved:
        raise ConfigError(f"room {room}: type {obj.__qualname__} registers session-layer message types "
                          f"{sorted(reserved)}")
    return obj


def _builtin(config: ServerConfig, rc: RoomConfig) -> dict[str, Any]:
    from ..game.world import default_rooms

    if config.rooms:
        spec = next(s for s in config.room_specs() if s.name == rc.name)
    else:
        spec = next(s for s in default_rooms() if s.name == rc.name)
    return {"spec": spec, "rules": config.rules()}


def room_types(config: ServerConfig, search: Sequence[str] = ()) -> list[RoomType]:
    """The configured rooms (the default world when none), each checked; raises ConfigError."""
    from ..game.worldroom import WorldRoom

    out = []
    for rc in config.room_configs():
        if rc.type is None:
            cls: type[Room] = WorldRoom
            options = _builtin(config, rc)
        else:
            cls = (load_class(rc.type, rc.name, search) if isinstance(rc.type, str)
                   else check_class(rc.type, rc.name))
            options = dict(rc.options)
        settings = None
        if cls.options_model is not None:
            try:
                settings = cls.options_model.model_validate(options)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "options"
                raise ConfigError(f"room {rc.name}: bad options: {where}: {first['msg']}") from None
        rate = rc.tick_rate or cls.tick_rate or config.game.tick_rate
        out.append(RoomType(rc.name, cls, options, settings, rc.max_players or cls.max_players, float(rate),
                            rc.idle_dispose))
    return out


def create_room(rt: RoomType, instance: str) -> Room:
    """A new instance of ``rt`` named ``instance``, its ``on_create`` done; ConfigError when it refuses."""
    try:
        room = rt.cls()
        room.name = instance
        room.options = dict(rt.options)
        room.settings = rt.settings
        room.players = {}
        room.now = room.tick = 0
        room._services = None
        room.on_create()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"room {instance}: {rt.cls.__qualname__}.on_create failed: "
                          f"{type(exc).__name__}: {exc}") from None
    return room
