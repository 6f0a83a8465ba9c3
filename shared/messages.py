"""pydantic models of every wire message (protocol version 1), one class per ``t``.

Guarantees:
- strict types: ``"5"`` is not a number, ``true`` is not an integer, no NaN/infinity anywhere;
  an integer is accepted where a number is expected (JSON and msgpack clients write ``5`` for ``5.0``);
- every limit of the protocol is checked here (names, secrets, chat text, ``top.n``, ``rid`` range);
- unknown extra fields are ignored (forward compatibility); ``None`` fields are left out on encode;
- list-of-lists fields keep the wire shape (``moved`` is ``[[id, x, y], ...]``), as tuples in Python;
- extension: server messages other than ``UNSEQUENCED_TYPES`` carry ``seq`` (per session, 1, 2, 3 ...), and
  ``resume`` may carry the last one received (``welcome`` then says ``recovered``).

``ClientMessage`` / ``ServerMessage`` are discriminated unions on ``t``; ``CLIENT_TYPES`` and
``SERVER_TYPES`` map ``t`` to the model class (the codec validates against the class directly).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, TypeAdapter

PROTOCOL_VERSION = 1

NAME_PATTERN = r"^[A-Za-z0-9_]{3,16}$"
SECRET_MIN, SECRET_MAX = 16, 128
CHAT_MIN, CHAT_MAX = 1, 200
TOP_MIN, TOP_MAX = 1, 100
ROOM_MAX = 64  # our choice: the protocol does not bound room names
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # anything msgpack can carry as an integer

INSTANCE_SEP = "~"   # a room's instances: NAME (the first), NAME~2, NAME~3, ...


def room_kind(room: str) -> str:
    """The configured room name of an instance id (``arena~3`` -> ``arena``; ``arena`` -> ``arena``)."""
    return room.split(INSTANCE_SEP, 1)[0]


def instance_number(room: str) -> int | None:
    """1 for a room's first instance (its own name), n for ``NAME~n`` (n >= 2), None when malformed."""
    if INSTANCE_SEP not in room:
        return 1
    number = room.split(INSTANCE_SEP, 1)[1]
    if not number.isdigit() or number.startswith("0") or int(number) < 2:
        return None
    return int(number)


def instance_id(kind: str, number: int) -> str:
    """The id of instance ``number`` of room ``kind``."""
    return kind if number == 1 else f"{kind}{INSTANCE_SEP}{number}"


# --- field types -------------------------------------------------------------------------------
Int = Annotated[int, Strict(), Field(ge=INT64_MIN, le=UINT64_MAX)]
Count = Annotated[int, Strict(), Field(ge=0, le=UINT64_MAX)]
Num = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Text = Annotated[str, Strict()]
Name = Annotated[str, Strict(), StringConstraints(pattern=NAME_PATTERN)]
Secret = Annotated[str, Strict(), StringConstraints(min_length=SECRET_MIN, max_length=SECRET_MAX)]
ChatText = Annotated[str, Strict(), StringConstraints(min_length=CHAT_MIN, max_length=CHAT_MAX)]
RoomName = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=ROOM_MAX)]
Rid = Int | None
Seq = Annotated[int, Strict(), Field(ge=1, le=UINT64_MAX)] | None
"""``seq`` of a server message: 1 for a session's first numbered message, +1 for each next one; every
type but ``tick``, ``pong``, ``welcome``, ``joined``, ``bye`` and ``redirect`` carries it (extension)."""

# Containers are lax (a tuple or list builds a list) so server code may pass either; their items
# stay strict. Off the wire only lists arrive, so this changes nothing for decoding.
MovedEntry = Annotated[tuple[Int, Num, Num], Strict(False)]  # [id, x, y]
PlayerEntry = Annotated[tuple[Int, Name, Num, Num], Strict(False)]  # [id, name, x, y]
MobEntry = Annotated[tuple[Int, Text, Num, Num, Count], Strict(False)]  # [id, kind, x, y, hp]
MobHpEntry = Annotated[tuple[Int, Count], Strict(False)]  # [id, hp]
Bounds = Annotated[tuple[Num, Num], Strict(False)]  # [w, h]


def _list(item: Any) -> Any:
    return Annotated[list[item], Strict(False)]


def _require_t(schema: dict[str, Any]) -> None:
    # ``t`` has a Python default (``Ping()`` just works) but is mandatory on the wire.
    schema["required"] = ["t", *(f for f in schema.get("required", []) if f != "t")]


class Message(BaseModel):
    """Base of every message: ``t`` first, then the optional request id ``rid``."""

    model_config = ConfigDict(
        strict=True, extra="ignore", validate_by_name=True, validate_by_alias=True,
        json_schema_extra=_require_t,
    )

    t: str
    rid: Rid = None


class Character(BaseModel):
    """A character as shown in ``welcome`` and ``profile``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    name: Name
    level: Count
    xp: Count
    room: RoomName
    x: Num
    y: Num


class TopEntry(BaseModel):
    """One leaderboard row of ``top``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    name: Name
    level: Count
    xp: Count


# --- client to server ----------------------------------------------------------------------------
TickFormat = Literal["v1", "compact"]


class Login(Message):
    """Log in (first login of a name creates the character); answered by ``welcome`` then ``joined``.

    Extension: ``tick_format="compact"`` asks for ticks with integer positions in tenths of a unit."""

    t: Literal["login"] = "login"
    name: Name
    secret: Secret
    tick_format: TickFormat | None = None


class Resume(Message):
    """Take a session back with the token of its last ``welcome``; answered like ``login``.

    ``seq`` (extension): the highest ``seq`` received; the ``welcome`` then says ``recovered`` and every
    message after it that the server still keeps follows the ``joined``. Without it: v1, nothing replayed."""

    t: Literal["resume"] = "resume"
    token: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=1024)]
    tick_format: TickFormat | None = None
    seq: Count | None = None


class Join(Message):
    """Enter a room (leaving the current one first); answered by ``joined`` (or ``redirect``)."""

    t: Literal["join"] = "join"
    room: RoomName


class Leave(Message):
    """Leave the current room; answered by ``left``."""

    t: Literal["leave"] = "leave"


class Move(Message):
    """Move toward ``x``, ``y``; no direct answer, the position shows in ``tick``."""

    t: Literal["move"] = "move"
    x: Num
    y: Num


class Chat(Message):
    """Say something to the room; everyone there (the sender included) gets a server ``chat``."""

    t: Literal["chat"] = "chat"
    text: ChatText


class Attack(Message):
    """Hit a mob; answered by ``hit``."""

    t: Literal["attack"] = "attack"
    mob: Int


class Me(Message):
    """Ask for one's own profile; answered by ``profile``."""

    t: Literal["me"] = "me"


class Top(Message):
    """Ask for the ``n`` best characters by XP; answered by server ``top`` (:class:`TopEntries`)."""

    t: Literal["top"] = "top"
    n: Annotated[int, Strict(), Field(ge=TOP_MIN, le=TOP_MAX)]


class Ping(Message):
    """Keep-alive and round-trip probe; answered by ``pong``."""

    t: Literal["ping"] = "ping"


class Rooms(Message):
    """Extension: list the instances of room ``room``; answered by server ``rooms`` (:class:`RoomList`)."""

    t: Literal["rooms"] = "rooms"
    room: RoomName


# --- server to client ----------------------------------------------------------------------------
class Welcome(Message):
    """Login or resume accepted; ``token`` resumes this ``session`` later."""

    t: Literal["welcome"] = "welcome"
    session: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256)]
    token: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=1024)]
    character: Character
    tick_rate: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
    protocol: Annotated[int, Strict(), Field(ge=1)] = PROTOCOL_VERSION
    tick_format: TickFormat | None = None   # extension: echoed when the request asked for one
    recovered: bool | None = None
    """Only in answer to a ``resume`` with ``seq``: True when every message after it follows the
    ``joined`` (``replay`` of them), False when some are gone and none is replayed (refresh with
    ``me``/``top``)."""
    replay: Count | None = None


class Joined(Message):
    """The receiver is now in ``room`` as player ``you``; ``players`` are those in its area of interest.

    A room type may add fields of its own (``Room.on_join``): they are kept (``msg.model_extra``)."""

    model_config = ConfigDict(extra="allow")

    t: Literal["joined"] = "joined"
    room: RoomName
    you: Int
    players: _list(PlayerEntry)
    mobs: _list(MobEntry)
    bounds: Bounds


class Left(Message):
    """The receiver left ``room``."""

    t: Literal["left"] = "left"
    room: RoomName
    seq: Seq = None


class Tick(Message):
    """What changed in the receiver's area of interest since its previous tick.

    ``joined`` / ``left`` list players entering / leaving the area of interest (by joining or leaving
    the room, or by walking). A missing list means empty.
    """

    t: Literal["tick"] = "tick"
    n: Count
    ts: Num
    moved: _list(MovedEntry) = Field(default_factory=list)
    joined: _list(PlayerEntry) = Field(default_factory=list)
    left: _list(Int) = Field(default_factory=list)
    mobs: _list(MobHpEntry) = Field(default_factory=list)


class ChatMessage(Message):
    """A chat line said in the receiver's room (``t`` is ``chat``; Python field ``from_``, wire ``from``)."""

    t: Literal["chat"] = "chat"
    from_: Name = Field(alias="from")
    text: ChatText
    ts: Num
    seq: Seq = None


class Hit(Message):
    """Result of an ``attack``: damage dealt and hp left (0 means killed)."""

    t: Literal["hit"] = "hit"
    mob: Int
    dmg: Count
    hp: Count
    seq: Seq = None


class Xp(Message):
    """XP granted and stored durably; ``xp`` and ``level`` are the new totals."""

    t: Literal["xp"] = "xp"
    gained: Count
    xp: Count
    level: Count
    reason: Text
    seq: Seq = None


class LevelUp(Message):
    """Character ``name`` reached ``level``; sent to the whole room."""

    t: Literal["level_up"] = "level_up"
    name: Name
    level: Count
    seq: Seq = None


class Profile(Message):
    """Answer to ``me``."""

    t: Literal["profile"] = "profile"
    character: Character
    kills: Count
    seq: Seq = None


class TopEntries(Message):
    """Answer to ``top`` (``t`` is ``top``): highest XP first."""

    t: Literal["top"] = "top"
    entries: _list(TopEntry)
    seq: Seq = None


class Pong(Message):
    """Answer to ``ping`` with the server's wall-clock time."""

    t: Literal["pong"] = "pong"
    ts: Num


class Error(Message):
    """A request failed; ``code`` is one of :class:`shared.errors.ErrorCode` (kept a plain string so a
    client keeps working when a newer server adds codes)."""

    t: Literal["error"] = "error"
    code: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]
    message: Text
    retry_after: Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)] | None = None
    """Seconds until the request may succeed: ``rate_limited`` of a login locked by failed secrets, and
    the admission refusals ``busy`` / ``server_full``."""
    seq: Seq = None


class Bye(Message):
    """The server is about to close the socket; ``reason`` is one of :class:`shared.errors.ByeReason`."""

    t: Literal["bye"] = "bye"
    reason: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]


class RoomEntry(BaseModel):
    """One instance in ``rooms``: its id, players seated (in it or holding a seat), seats (None: no limit)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    room: RoomName
    players: Count
    max_players: Count | None = None


class RoomList(Message):
    """Answer to ``rooms`` (``t`` is ``rooms``): the instances of one room, first instance first."""

    t: Literal["rooms"] = "rooms"
    entries: _list(RoomEntry)
    seq: Seq = None


class Redirect(Message):
    """Extension: reconnect to ``url`` and send ``resume`` with ``token`` (room owned by another node)."""

    t: Literal["redirect"] = "redirect"
    url: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=2048)]
    token: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=1024)]


class Custom(Message):
    """A server message that is not one of protocol v1's shapes: a room type's own message (``t`` of its
    choosing), or a v1 type carrying another room type's fields (the ``joined`` of a game room). Every
    field is kept as it came, readable as an attribute (``msg.text``) or with ``msg.model_extra``."""

    model_config = ConfigDict(strict=True, extra="allow")


ClientMessage = Annotated[
    Union[Login, Resume, Join, Leave, Move, Chat, Attack, Me, Top, Ping, Rooms],  # noqa: UP007
    Field(discriminator="t"),
]
ServerMessage = Annotated[
    Union[  # noqa: UP007
        Welcome, Joined, Left, Tick, ChatMessage, Hit, Xp, LevelUp, Profile, TopEntries, Pong, Error, Bye,
        Redirect, RoomList,
    ],
    Field(discriminator="t"),
]
client_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessage)
server_adapter: TypeAdapter[Any] = TypeAdapter(ServerMessage)

CLIENT_TYPES: dict[str, type[Message]] = {
    cls.model_fields["t"].default: cls
    for cls in (Login, Resume, Join, Leave, Move, Chat, Attack, Me, Top, Ping, Rooms)
}
SERVER_TYPES: dict[str, type[Message]] = {
    cls.model_fields["t"].default: cls
    for cls in (
        Welcome, Joined, Left, Tick, ChatMessage, Hit, Xp, LevelUp, Profile, TopEntries, Pong, Error, Bye,
        Redirect, RoomList,
    )
}
# Only these server messages are direct replies (they carry the request's ``rid``).
# Server messages that never carry ``seq`` (every other one does: a per-session number, kept for resume).
UNSEQUENCED_TYPES = frozenset({"tick", "pong", "welcome", "joined", "bye", "redirect"})
REPLY_TYPES = frozenset({"welcome", "joined", "left", "profile", "top", "pong", "hit", "error", "redirect",
                         "rooms"})
