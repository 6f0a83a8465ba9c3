"""Models: every limit of the protocol, strict types, extra fields ignored, the ``from`` alias."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from shared import messages as m
from shared.errors import ByeReason, ErrorCode

from .examples import EXAMPLES

SECRET = "s" * 16


def client(d: dict) -> m.Message:
    return m.client_adapter.validate_python(d)


def server(d: dict) -> m.Message:
    return m.server_adapter.validate_python(d)


def rejected(d: dict, adapter=m.client_adapter) -> None:
    with pytest.raises(ValidationError):
        adapter.validate_python(d)


@pytest.mark.parametrize("model", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_example_round_trips_through_its_union(model: m.Message) -> None:
    adapter = m.client_adapter if type(model) in m.CLIENT_TYPES.values() else m.server_adapter
    assert adapter.validate_python(model.model_dump(by_alias=True)) == model


def test_unions_cover_every_type_in_the_protocol() -> None:
    assert set(m.CLIENT_TYPES) == {"login", "resume", "join", "leave", "move", "chat", "attack", "me", "top",
                                   "ping", "rooms"}
    assert set(m.SERVER_TYPES) == {"welcome", "joined", "left", "tick", "chat", "hit", "xp", "level_up",
                                   "profile", "top", "pong", "error", "bye", "redirect", "rooms"}


def test_instance_ids() -> None:
    assert [m.instance_number(r) for r in ("arena", "arena~2", "arena~10", "arena~1", "arena~02", "a~x")] == [
        1, 2, 10, None, None, None]
    assert m.room_kind("arena~3") == "arena" and m.instance_id("arena", 1) == "arena"
    assert m.instance_id("arena", 4) == "arena~4"


@pytest.mark.parametrize("name", ["abc", "A_b_1", "x" * 16, "___"])
def test_valid_names(name: str) -> None:
    assert client({"t": "login", "name": name, "secret": SECRET}).name == name


@pytest.mark.parametrize("name", ["ab", "x" * 17, "bad name", "héllo", "a-b", "abc\n", "", 123, None])
def test_invalid_names(name) -> None:
    rejected({"t": "login", "name": name, "secret": SECRET})


@pytest.mark.parametrize(("secret", "ok"), [("s" * 15, False), ("s" * 16, True), ("s" * 128, True),
                                              ("s" * 129, False), ("é" * 16, True), (b"s" * 16, False)])
def test_secret_length(secret, ok: bool) -> None:
    d = {"t": "login", "name": "alice", "secret": secret}
    if ok:
        assert client(d).secret == secret
    else:
        rejected(d)


@pytest.mark.parametrize(("text", "ok"), [("", False), ("a", True), ("x" * 200, True), ("x" * 201, False),
                                          ("🌲" * 200, True), (5, False)])
def test_chat_text_length(text, ok: bool) -> None:
    if ok:
        assert client({"t": "chat", "text": text}).text == text
        assert server({"t": "chat", "from": "bob", "text": text, "ts": 1.0}).text == text
    else:
        rejected({"t": "chat", "text": text})
        rejected({"t": "chat", "from": "bob", "text": text, "ts": 1.0}, m.server_adapter)


@pytest.mark.parametrize(("n", "ok"), [(0, False), (1, True), (100, True), (101, False), (-1, False),
                                       (5.0, False), ("5", False), (True, False)])
def test_top_n(n, ok: bool) -> None:
    if ok:
        assert client({"t": "top", "n": n}).n == n
    else:
        rejected({"t": "top", "n": n})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "5", True, None, [1]])
def test_move_rejects_non_finite_and_wrong_types(value) -> None:
    rejected({"t": "move", "x": value, "y": 1.0})
    rejected({"t": "move", "x": 1.0, "y": value})


def test_move_accepts_ints_as_numbers() -> None:
    msg = client({"t": "move", "x": 5, "y": -2})
    assert (msg.x, msg.y) == (5.0, -2.0) and type(msg.x) is float


@pytest.mark.parametrize(("rid", "ok"), [(0, True), (2**63 - 1, True), (2**64 - 1, True), (-(2**63), True),
                                         (2**64, False), (-(2**63) - 1, False), ("5", False), (True, False),
                                         (1.0, False), (None, True)])
def test_rid_is_a_64_bit_integer(rid, ok: bool) -> None:
    if ok:
        assert client({"t": "ping", "rid": rid}).rid == rid
    else:
        rejected({"t": "ping", "rid": rid})


def test_attack_mob_is_a_strict_integer() -> None:
    assert client({"t": "attack", "mob": 3}).mob == 3
    for bad in ("3", 3.0, True, None):
        rejected({"t": "attack", "mob": bad})


def test_missing_fields_are_rejected() -> None:
    rejected({"t": "login", "name": "alice"})
    rejected({"t": "move", "x": 1})
    rejected({"t": "join"})
    rejected({"t": "resume"})


def test_unknown_and_missing_t_are_rejected() -> None:
    rejected({"t": "dance"})
    rejected({"name": "alice"})
    rejected({"t": "welcome"})  # a server type is not a client message


def test_extra_fields_are_ignored() -> None:
    msg = client({"t": "move", "x": 1, "y": 2, "future_field": {"a": 1}})
    assert msg == m.Move(x=1, y=2)
    assert "future_field" not in msg.model_dump()


def test_room_names_are_bounded() -> None:
    assert client({"t": "join", "room": "forest"}).room == "forest"
    rejected({"t": "join", "room": ""})
    rejected({"t": "join", "room": "r" * (m.ROOM_MAX + 1)})


def test_chat_from_uses_the_wire_alias() -> None:
    msg = m.ChatMessage(from_="bob", text="hi", ts=1.0)
    assert msg.model_dump(by_alias=True)["from"] == "bob"
    assert server({"t": "chat", "from": "bob", "text": "hi", "ts": 1}).from_ == "bob"
    rejected({"t": "chat", "text": "hi", "ts": 1}, m.server_adapter)


def test_tick_lists_keep_the_wire_shape_and_default_to_empty() -> None:
    tick = server({"t": "tick", "n": 1, "ts": 2.0, "moved": [[1, 2, 3]], "mobs": [[4, 5]]})
    assert tick.moved == [(1, 2.0, 3.0)] and tick.mobs == [(4, 5)]
    assert tick.joined == [] and tick.left == []
    rejected({"t": "tick", "n": 1, "ts": 2.0, "moved": [[1, 2]]}, m.server_adapter)
    rejected({"t": "tick", "n": 1, "ts": 2.0, "moved": [["1", 2, 3]]}, m.server_adapter)
    rejected({"t": "tick", "n": 1, "ts": 2.0, "joined": [[1, "x", 2, 3]]}, m.server_adapter)  # bad name
    rejected({"t": "tick", "n": 1, "ts": 2.0, "left": [True]}, m.server_adapter)
    rejected({"t": "tick", "n": 1, "ts": math.nan}, m.server_adapter)


def test_joined_shapes() -> None:
    ok = {"t": "joined", "room": "forest", "you": 1, "players": [[1, "alice", 1, 2]],
          "mobs": [[7, "wolf", 3, 4, 100]], "bounds": [1000, 1000]}
    assert server(ok).bounds == (1000.0, 1000.0)
    rejected({**ok, "mobs": [[7, "wolf", 3, 4]]}, m.server_adapter)
    rejected({**ok, "bounds": [1000]}, m.server_adapter)
    rejected({**ok, "players": {"1": "alice"}}, m.server_adapter)


def test_server_code_may_pass_tuples_and_enums() -> None:
    joined = m.Joined(room="r", you=1, players=((1, "alice", 1.0, 2.0),), mobs=(), bounds=[10, 10])
    assert joined.players == [(1, "alice", 1.0, 2.0)]
    err = m.Error(code=ErrorCode.COOLDOWN, message="wait")
    bye = m.Bye(reason=ByeReason.IDLE)
    assert type(err.code) is str and err.code == "cooldown" and bye.reason == "idle"


def test_welcome_defaults_to_protocol_1_and_needs_a_positive_tick_rate() -> None:
    character = {"name": "alice", "level": 1, "xp": 0, "room": "town", "x": 1, "y": 2}
    welcome = {"t": "welcome", "session": "s", "token": "tok", "character": character, "tick_rate": 20}
    assert server(welcome).protocol == m.PROTOCOL_VERSION == 1
    rejected({**welcome, "tick_rate": 0}, m.server_adapter)
    rejected({**welcome, "character": {**character, "xp": -1}}, m.server_adapter)
    rejected({**welcome, "session": 5}, m.server_adapter)


def test_python_construction_is_strict_too() -> None:
    with pytest.raises(ValidationError):
        m.Move(x="1", y=2)
    with pytest.raises(ValidationError):
        m.Hit(mob=1, dmg=-1, hp=0)
