"""Structured logging: one line per event, JSON (default, for machines) or kv (for people).

Use ``event(logger, "name", key=value, ...)``: ``name`` is a stable snake_case event name that machines
match on, fields go into the line, never into the message format. A person reads a sentence first: the
``say=`` argument, else the sentence ``SENTENCES`` has for the event, else the event name in words; the
``kv`` format writes ``<time> <level> <logger>: <sentence> key=value ... event=name``, JSON writes
``{"ts", "level", "logger", "event": name, "msg": sentence, **fields}``. A handler that knows nothing of
this module (Python's last-resort stderr handler, pytest's capture) prints ``<sentence> key=value ...``.

``configure`` touches the root logger and is meant for the command lines only (tests run several servers
in one process and keep pytest's logging).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Sentences of the events a person running the server reads; other events default to their name in words.
SENTENCES: dict[str, str] = {
    "ephemeral_token_secret": "auth.token_secret is not set, so resume tokens will not survive a restart.",
    "started": "Game server started.",
    "stopping": "Game server stopping: every session gets bye shutdown.",
    "stopped": "Game server stopped.",
    "signal": "Signal received.",
}


class _Line:
    """The human form of one event, built only if a handler asks for it."""

    __slots__ = ("fields", "say", "what")

    def __init__(self, what: str, say: str | None, fields: dict[str, Any]) -> None:
        self.what, self.say, self.fields = what, say, fields

    def sentence(self) -> str:
        return self.say or SENTENCES.get(self.what) or self.what.replace("_", " ").capitalize() + "."

    def __str__(self) -> str:
        pairs = " ".join(f"{k}={_kv(v)}" for k, v in self.fields.items())
        return f"{self.sentence()} {pairs}".rstrip()


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.kind = fmt

    def format(self, record: logging.LogRecord) -> str:
        line = record.msg if isinstance(record.msg, _Line) else None
        if self.kind == "json":
            fields: dict[str, Any] = {
                "ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
            }
            if line is not None:
                fields["event"] = line.what
                fields["msg"] = line.sentence()
                fields.update(line.fields)
            else:
                fields["event"] = record.getMessage()
            if record.exc_info:
                fields["exc"] = self.formatException(record.exc_info)
            return json.dumps(fields, default=str, separators=(",", ":"))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        text = f"{stamp} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        if line is not None:
            text += f" event={line.what}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _kv(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log line to stderr in ``fmt`` ("json" or "kv") from ``level`` up (command lines only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(max(logging.getLevelName(level), logging.WARNING))


def event(logger: logging.Logger, what: str, /, *, level: int = logging.INFO, exc_info: Any = False,
          say: str | None = None, **fields: Any) -> None:
    """Log one event ``what`` with structured fields (any names, ``name=`` included); ``say`` is the
    sentence a person reads (default: ``SENTENCES[what]``)."""
    if logger.isEnabledFor(level):
        logger.log(level, _Line(what, say, fields), exc_info=exc_info)
