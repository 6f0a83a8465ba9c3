"""Log lines: JSON stays machine-parseable with the event name; the kv form a person reads starts with a
sentence and keeps the fields after it."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

from gameserver import logs

GAMESERVER = Path(__file__).resolve().parents[2] / "gameserver"


def _record(what: str, **fields: object) -> logging.LogRecord:
    logger = logging.getLogger("gameserver.test")
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep()
    logger.addHandler(handler)
    old, logger.level = logger.level, logging.DEBUG
    try:
        logs.event(logger, what, level=logging.WARNING, **fields)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return captured[0]


def test_json_line_has_the_event_name_the_sentence_and_the_fields() -> None:
    line = json.loads(logs._Formatter("json").format(_record("ephemeral_token_secret", setting="a b")))
    assert line["event"] == "ephemeral_token_secret" and line["level"] == "warning"
    assert line["msg"] == logs.SENTENCES["ephemeral_token_secret"] and line["setting"] == "a b"


def test_kv_line_is_a_sentence_then_key_values_then_the_event_name() -> None:
    text = logs._Formatter("kv").format(_record("flush_failed", name="alice", error="disk full"))
    expected = ' warning gameserver.test: Flush failed. name=alice error="disk full" event=flush_failed'
    assert text.endswith(expected), text


def test_a_plain_handler_prints_the_sentence_not_the_bare_event_name() -> None:
    record = _record("ephemeral_token_secret", setting="auth.token_secret")
    assert record.getMessage() == f"{logs.SENTENCES['ephemeral_token_secret']} setting=auth.token_secret"


def test_every_sentence_belongs_to_an_event_the_server_logs() -> None:
    logged: set[str] = set()
    for path in GAMESERVER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            name = getattr(func, "attr", getattr(func, "id", None))
            if (isinstance(node, ast.Call) and name == "event" and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)):
                logged.add(node.args[1].value)
    assert set(logs.SENTENCES) <= logged, set(logs.SENTENCES) - logged
