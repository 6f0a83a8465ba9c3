"""JSON Schema of the wire protocol, generated from the models in :mod:`shared.messages`.

``python -m shared.schema`` rewrites ``shared/schema/protocol.schema.json``; a test regenerates the
schema in memory and fails when the committed file is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .messages import PROTOCOL_VERSION, ClientMessage, ServerMessage

SCHEMA_PATH = Path(__file__).with_name("schema") / "protocol.schema.json"
_REF = "#/$defs/{model}"


def build_schema() -> dict[str, Any]:
    """Both unions in one document: ``$defs.ClientMessage`` and ``$defs.ServerMessage``."""
    defs: dict[str, Any] = {}
    for name, union in (("ClientMessage", ClientMessage), ("ServerMessage", ServerMessage)):
        schema = TypeAdapter(union).json_schema(ref_template=_REF)
        defs.update(schema.pop("$defs", {}))
        defs[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Game wire protocol, version {PROTOCOL_VERSION}",
        "description": (
            "Every frame is one map (msgpack in binary frames, JSON in text frames) with a string field "
            "'t'. ClientMessage: client to server; ServerMessage: server to client. Unknown extra fields "
            "are ignored. See docs/protocol.md."
        ),
        "anyOf": [{"$ref": _REF.format(model="ClientMessage")}, {"$ref": _REF.format(model="ServerMessage")}],
        "$defs": dict(sorted(defs.items())),
    }


def render_schema() -> str:
    """The exact text of the committed schema file."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema file (or the path given as the only argument)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SCHEMA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
