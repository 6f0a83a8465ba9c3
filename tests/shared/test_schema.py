"""The committed JSON Schema must match the models."""

from __future__ import annotations

import json

from shared.messages import CLIENT_TYPES, SERVER_TYPES
from shared.schema import SCHEMA_PATH, build_schema, main, render_schema


def test_committed_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), "run: python -m shared.schema"


def test_schema_has_both_unions_and_every_model() -> None:
    schema = build_schema()
    defs = schema["$defs"]
    client = {d["$ref"].rsplit("/", 1)[1] for d in defs["ClientMessage"]["oneOf"]}
    server = {d["$ref"].rsplit("/", 1)[1] for d in defs["ServerMessage"]["oneOf"]}
    assert client == {cls.__name__ for cls in CLIENT_TYPES.values()}
    assert server == {cls.__name__ for cls in SERVER_TYPES.values()}
    assert defs["ChatMessage"]["required"] == ["t", "from", "text", "ts"]
    assert defs["Login"]["properties"]["name"]["pattern"] == "^[A-Za-z0-9_]{3,16}$"


def test_main_writes_the_rendered_schema(tmp_path) -> None:
    out = tmp_path / "s.json"
    assert main([str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == build_schema()
