"""Structured logging: one line per event, JSON (default) or key=value.

Use ``event(logger, "name", key=value, ...)``; fields go into the line, never into the message format.
``configure`` touches the root logger and is meant for the CLI only (tests run several servers in one
process and keep pytest's logging).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.kind = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
            "event": record.getMessage(),
        }
        fields.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.kind == "json":
            return json.dumps(fields, default=str, separators=(",", ":"))
        return " ".join(f"{k}={_kv(v)}" for k, v in fields.items())


def _kv(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.Formatter.converter = time.gmtime


def event(logger: logging.Logger, what: str, /, *, level: int = logging.INFO, exc_info: Any = False,
          **fields: Any) -> None:
    """Log one event line ``what`` with structured fields (any names, ``name=`` included)."""
    if logger.isEnabledFor(level):
        logger.log(level, what, extra={"fields": fields}, exc_info=exc_info)
