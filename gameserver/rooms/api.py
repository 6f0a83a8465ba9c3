"""The game-author API: a room type is a Python class; the server runs its instances.

::

    from pydantic import BaseModel
    from gameserver.rooms import Room, Player, on_message

    class Say(BaseModel):
        text: str

    class EchoRoom(Room):
        tick_rate = 10                                   # Hz; without it the server's [game] tick_rate
        def on_create(self) -> None: ...                 # self.name, self.options (the room's options table)
        def on_join(self, player: Player) -> dict | None: ...   # extra fields of this player's `joined`
        def on_leave(self, player: Player) -> None: ...
        def on_tick(self, now: float) -> None: ...       # once per tick, after the tick's inputs
        @on_message("say", Say)
        def say(self, player: Player, msg: Say) -> dict | None: ...   # a returned dict is the reply

Guarantees the runner (``gameserver.rooms.runner``) gives every room:

- One room instance is driven by one task: hooks and handlers are plain functions called one at a time,
  never concurrently, never awaited. A tick applies the inputs that arrived since the previous tick in
  arrival order (joins, leaves, chat and registered messages alike), then calls ``on_tick``.
- Messages are validated by their model before a handler sees them (``bad_message`` with the field path
  otherwise); a handler returning a dict has it sent as the reply with the request's ``rid``.
- ``raise RoomError(code, message)`` refuses a message with that error code. Any other exception is
  answered ``error internal`` to that player (no traceback on the wire), logged with its traceback and
  counted in ``gameserver_room_errors``; the room keeps ticking for everyone else.
- ``send``/``broadcast``/``send_tick`` queue messages; they go out at the end of the tick, in the order they
  were queued per receiver, in at most one socket write per receiver, each body encoded once per encoding
  whatever the number of receivers. Outside a tick (a hook called when a session ends) they go out at once.
- ``self.now`` is the time of what is being handled, on the runner's monotonic clock: a message's arrival
  time in its handler (so two moves inside one tick each count from their own arrival), the tick's time in
  ``on_tick``.

Don't override ``__init__``: set up state in ``on_create``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from ..characters import Character

__all__ = ["SESSION_TYPES", "Player", "Room", "RoomError", "on_message"]

SESSION_TYPES = frozenset({"login", "resume", "join", "leave", "me", "top", "ping", "chat", "rooms"})
"""Client message types of the session layer: no room type may register these."""

F = TypeVar("F", bound=Callable[..., Any])


class RoomError(Exception):
    """Raise in a handler to refuse the message: the sender gets ``error`` with this ``code`` and
    ``message`` (and the request's ``rid``); nothing is logged as a failure."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code


def on_message(t: str, model: type[BaseModel]) -> Callable[[F], F]:
    """Make the decorated method the handler of client messages of type ``t``, validated by ``model``.

    The handler is called as ``handler(self, player, msg)`` with ``msg`` an instance of ``model``; the
    fields ``t`` and ``rid`` of the frame are not passed to the model.
    """
    if not isinstance(t, str) or not t:
        raise TypeError("on_message needs a non-empty message type string")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"on_message({t!r}, ...) needs a pydantic model class, got {model!r}")

    def mark(fn: F) -> F:
        fn.__room_message__ = (t, model)  # type: ignore[attr-defined]
        return fn

    return mark


class Player:
    """A player in a room, as the room's code sees it.

    ``id`` is unique in the room while the player is in it; ``name`` is the character's name. ``data`` is
    this room type's own per-character dict (``Room.data_namespace``): loaded at login, saved behind the
    scenes like positions (a plain assignment such as ``player.data["coins"] = 7`` is enough), surviving a
    clean restart; keep it to msgpack-able values (str, int, float, bool, None, lists, dicts). ``x``/``y``
    are the character's saved place, shown in ``welcome`` and restored at login: rooms that have positions
    keep them current. ``returning`` is True when this join puts the player back where its character was
    (login into its saved room, a resume), so ``x``/``y`` are where it should be placed; False for a
    ``join``. ``kills`` counts killing blows (reported by ``me``); ``level`` and ``xp`` are read-only (XP
    changes only through ``Room.grant_xp``).
    """

    __slots__ = ("_character", "_data", "id", "name", "returning", "session")

    def __init__(self, pid: int, character: Character, data: dict[str, Any], session: Any = None,
                 returning: bool = False) -> None:
        self.id = pid
        self.name = character.name
        self._character = character
        self._data = data
        self.session = session        # the server's session handle (opaque to room code)
        self.returning = returning

    @property
    def data(self) -> dict[str, Any]:
        return self._data

    @property
    def x(self) -> float:
        return self._character.x

    @x.setter
    def x(self, value: float) -> None:
        self._character.x = float(value)
        self._character.dirty = True

    @property
    def y(self) -> float:
        return self._character.y

    @y.setter
    def y(self, value: float) -> None:
        self._character.y = float(value)
        self._character.dirty = True

    def place(self, x: float, y: float) -> None:
        """Set both coordinates at once (one dirty mark: the hot path of a moving player)."""
        ch = self._character
        ch.x, ch.y = x, y
        ch.dirty = True

    @property
    def kills(self) -> int:
        return self._character.kills

    @kills.setter
    def kills(self, value: int) -> None:
        self._character.kills = int(value)
        self._character.dirty = True

    @property
    def level(self) -> int:
        return self._character.level

    @property
    def xp(self) -> int:
        return self._character.xp

    def __repr__(self) -> str:
        return f"Player({self.id}, {self.name!r})"


class RoomServices:
    """What the runner lends a room instance (bound before ``on_create``); room code calls the ``Room``
    methods, never this."""

    def send(self, player: Player, body: dict[str, Any]) -> None: ...
    def broadcast(self, body: dict[str, Any], exclude: Player | None) -> None: ...
    def send_tick(self, receivers: Iterable[Player | int], body: dict[str, Any]) -> None: ...
    def grant_xp(self, name: str, amount: int, reason: str) -> None: ...


def _check_body(body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("t"), str):
        raise TypeError(f"a message body must be a dict with a string 't', got {body!r:.80}")


class Room:
    """Base class of every room type (see the module docstring for what the runner guarantees)."""

    tick_rate: ClassVar[float | None] = None
    """Ticks per second (1 to 1000); None: the server's ``[game] tick_rate``."""
    max_players: ClassVar[int | None] = None
    """Seats per instance; None: no limit. A ``max_players`` in the room's configuration wins."""
    data_namespace: ClassVar[str | None] = None
    """Key of ``Player.data`` in the character record; None: ``module:QualifiedName`` of the class."""
    options_model: ClassVar[type[BaseModel] | None] = None
    """Optional pydantic model of the options table: validated at start-up (a bad table is a start-up
    error naming the room); the validated instance is ``self.settings``."""
    messages: ClassVar[dict[str, tuple[type[BaseModel], str]]] = {}
    """``t`` -> (model, method name), collected from ``@on_message`` methods (inherited ones included)."""

    name: str
    options: dict[str, Any]
    settings: Any
    players: dict[int, Player]
    now: float
    tick: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, tuple[type[BaseModel], str]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                marked = getattr(value, "__room_message__", None)
                if marked is not None:
                    t, model = marked
                    if t in SESSION_TYPES:
                        raise TypeError(f"{cls.__qualname__}.{attr}: message type {t!r} belongs to the "
                                        f"session layer ({', '.join(sorted(SESSION_TYPES))})")
                    found[t] = (model, attr)
        cls.messages = found
        rate = cls.__dict__.get("tick_rate")
        if rate is not None and not (isinstance(rate, int | float) and math.isfinite(rate)
                                     and 1 <= rate <= 1000):
            raise TypeError(f"{cls.__qualname__}.tick_rate must be a number from 1 to 1000, got {rate!r}")

    def __init__(self) -> None:
        self.name = ""
        self.options = {}
        self.settings = None
        self.players = {}
        self.now = 0.0
        self.tick = 0
        self._services: RoomServices | None = None

    # -- hooks (override what you need) ---------------------------------------------------------------
    def on_create(self) -> None:
        """Once, before anyone joins: ``self.name`` and ``self.options`` are set."""

    def on_join(self, player: Player) -> dict[str, Any] | None:
        """``player`` is in ``self.players`` now; the returned dict's fields go into its ``joined``."""
        return None

    def on_reconnect(self, player: Player) -> dict[str, Any] | None:
        """``player``'s session resumed on a new socket (it never left the room): the fields of the fresh
        ``joined`` it gets (default: none beyond ``room`` and ``you``)."""
        return None

    def on_leave(self, player: Player) -> None:
        """``player`` left (``leave``, a room change, or the end of its session); it is no longer in
        ``self.players`` and gets nothing of this room afterwards."""

    def on_tick(self, now: float) -> None:
        """Once every tick, after the tick's inputs, whether or not anything changed."""

    def on_dispose(self) -> None:
        """The instance is going away (idle spill-over instance, server shutdown)."""

    def spawn_point(self) -> tuple[float, float]:
        """Where a new character starts when this is the server's start room (its saved ``x``/``y``)."""
        return (0.0, 0.0)

    def describe(self) -> dict[str, Any]:
        """Extra numbers for the monitor page (``/api/stats``), e.g. ``{"mobs_alive": 12}``."""
        return {}

    # -- services ------------------------------------------------------------------------------------
    def send(self, player: Player, body: dict[str, Any]) -> None:
        """Send one message (a dict with ``t``) to one player of this room; reliable, in order."""
        _check_body(body)
        self._bound().send(player, body)

    def broadcast(self, body: dict[str, Any], exclude: Player | None = None) -> None:
        """Send one message to everyone in the room (the sender included unless excluded); encoded once
        per encoding for all receivers."""
        _check_body(body)
        self._bound().broadcast(body, exclude)

    def send_tick(self, receivers: Iterable[Player | int], body: dict[str, Any]) -> None:
        """Send a ``tick`` (state update) to a group: the runner adds ``t``, ``n`` and ``ts`` and encodes
        it once for the whole group. Unlike ``send``, a receiver whose socket is backed up gets its ticks
        merged into one (lists of ``[id, ...]`` entries keep the latest entry per id; ``moved``/``joined``/
        ``left`` follow the area-of-interest rules of ``gameserver.rooms.aoi``)."""
        self._bound().send_tick(receivers, body)

    def grant_xp(self, player: Player | str, amount: int, reason: str) -> None:
        """Grant XP durably and exactly once: one compare-and-set with a grant id, ``xp`` to the player
        only after the store acknowledged it, ``level_up`` to the room when its level rose. Returns at
        once (the write happens in the background; the tick never waits). ``player`` may be a player who
        already left (or a character name)."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ValueError(f"grant_xp amount must be an int >= 0, got {amount!r}")
        name = player.name if isinstance(player, Player) else str(player)
        self._bound().grant_xp(name, amount, str(reason))

    def _bound(self) -> RoomServices:
        services = self._services
        if services is None:
            raise RuntimeError(f"room {self.name or type(self).__name__} is not running")
        return services

    @classmethod
    def data_key(cls) -> str:
        """Where ``Player.data`` of this room type lives in the character record."""
        return cls.data_namespace or f"{cls.__module__}:{cls.__qualname__}"
