"""The one configuration factory of test servers (in-process and subprocess), its TOML form, and the
Chromium lookup of the browser tests.

Every suite starts from ``config_dict``: loopback, any free port, quiet logs, a cheap scrypt (``n=16``: a
login costs microseconds, not milliseconds), a fixed token secret, the plain asyncio loop, admission's
load gates off (``gameserver.admission``; its own tests turn them on). Suites deep-merge
only what their tests are about (rooms, rules, grace, cluster). Free ports come from ``loadtest.procs``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from gameserver.config import ServerConfig, build_config, deep_merge

SECRET = "s3cret-s3cret-s3cret"
TOKEN_SECRET = "test-token-secret-0123456789"
# combat a test can predict: no cooldown, fixed damage, mobs back at once
FAST_RULES: dict[str, Any] = {"attack_cooldown": 0.0, "respawn_seconds": 0.05, "dmg_min": 10, "dmg_max": 10}


def config_dict(data_dir: Path | str | None = None, /, **sections: Any) -> dict[str, Any]:
    """A test server's configuration as a plain dict; ``data_dir`` gives an embedded store there
    (``durability=flush``); each keyword is deep-merged over the base (``auth={"grace_seconds": 1}``)."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "WARNING",
        "use_uvloop": False,
        "auth": {"token_secret": TOKEN_SECRET, "scrypt_n": 16},
        # admission's load gates off: an in-process server shares its event loop with the test's clients
        # (and test boxes are busy), so loop load would refuse logins for reasons that are not the server's
        "limits": {"max_loop_busy": 0, "max_tick_lag": 0},
    }
    if data_dir is not None:
        base["store"] = {"data_dir": str(data_dir), "durability": "flush"}
    return deep_merge(base, sections)


def server_config(data_dir: Path | str | None = None, /, **sections: Any) -> ServerConfig:
    """``config_dict`` validated into a ``ServerConfig`` (for an in-process ``GameServer``)."""
    return build_config(config_dict(data_dir, **sections))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for server configs (for ``gameserver serve --config``): scalars, tables, arrays of
    tables (``rooms``); ``None`` values are left out (TOML has no null)."""
    lines: list[str] = []

    def table(prefix: str, node: dict[str, Any]) -> None:
        scalars = {k: v for k, v in node.items() if v is not None and not isinstance(v, dict)
                   and not (isinstance(v, list) and v and isinstance(v[0], dict))}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in node.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(name, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{ik} = {_toml_value(iv)}" for ik, iv in item.items() if iv is not None)

    table("", data)
    return "\n".join(lines) + "\n"


CHROMIUM_MISSING = ("BROWSER TESTS SKIPPED: no executable Chromium (shutil.which('chromium') found none; "
                    "apt-get install chromium, or set CHROMIUM_PATH; .ci/run installs it)")


def find_chromium() -> str | None:
    """The Chromium the browser tests drive: ``$CHROMIUM_PATH`` or ``chromium`` as ``shutil.which`` finds
    it, so only an executable file counts."""
    return shutil.which(os.environ.get("CHROMIUM_PATH") or "chromium")
