"""Golden wire fixtures: any change to the bytes on the wire fails here."""

from __future__ import annotations

import json

import msgpack
import pytest

from gameserver.seqwire import with_seq
from shared.codec import decode_client, decode_server, encode, encode_raw
from shared.messages import CLIENT_TYPES, SERVER_TYPES

from .examples import EXAMPLES, SEQ_OF
from .make_golden import GOLDEN_DIR, golden_files

NAMES = sorted(EXAMPLES)


def _decode(name: str, frame: bytes | str):
    return decode_client(frame) if name.startswith("c2s_") else decode_server(frame)


@pytest.mark.parametrize("name", NAMES)
def test_encode_matches_golden_bytes(name: str) -> None:
    model = EXAMPLES[name]
    assert encode(model, binary=True) == (GOLDEN_DIR / f"{name}.msgpack").read_bytes()
    assert encode(model, binary=False) == (GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_golden_bytes_decode_to_the_model(name: str) -> None:
    model = EXAMPLES[name]
    assert _decode(name, (GOLDEN_DIR / f"{name}.msgpack").read_bytes()) == model
    assert _decode(name, (GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8")) == model


@pytest.mark.parametrize("name", NAMES)
def test_encode_raw_of_the_dump_gives_the_same_bytes(name: str) -> None:
    """The server's no-pydantic path and the model path agree byte for byte."""
    body = json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert encode_raw(body, binary=True) == (GOLDEN_DIR / f"{name}.msgpack").read_bytes()
    assert encode_raw(body, binary=False) == (GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8")


def test_msgpack_and_json_fixtures_hold_the_same_map() -> None:
    for name in NAMES:
        from_mp = msgpack.unpackb((GOLDEN_DIR / f"{name}.msgpack").read_bytes(), raw=False)
        assert from_mp == json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8")), name


def test_fixture_directory_is_exactly_the_generated_set() -> None:
    on_disk = {p.name for p in GOLDEN_DIR.iterdir() if p.suffix in (".msgpack", ".json")}
    assert on_disk == set(golden_files()), "run: python -m tests.shared.make_golden"


def test_every_message_type_has_a_fixture_in_its_direction() -> None:
    client = {m.t for n, m in EXAMPLES.items() if n.startswith("c2s_")}
    server = {m.t for n, m in EXAMPLES.items() if n.startswith("s2c_")}
    assert client == set(CLIENT_TYPES)
    assert server == set(SERVER_TYPES)


@pytest.mark.parametrize("name", sorted(SEQ_OF))
def test_numbered_fixtures_are_the_v1_bytes_with_seq_spliced_in(name: str) -> None:
    """What the server sends: the v1 message encoded once, ``seq`` spliced in (gameserver.seqwire)."""
    seq = SEQ_OF[name]
    for ext in ("msgpack", "json"):
        v1 = (GOLDEN_DIR / f"{name}.{ext}").read_bytes()
        numbered = (GOLDEN_DIR / f"{name}_seq.{ext}").read_bytes()
        frame = v1 if ext == "msgpack" else v1.decode()
        spliced = with_seq(frame, seq)
        assert (spliced if isinstance(spliced, bytes) else spliced.encode()) == numbered
