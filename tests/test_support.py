"""The shared test config factory and its TOML form, and the Chromium lookup of the browser tests."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gameserver.config import build_config
from tests.support import CHROMIUM_MISSING, config_dict, find_chromium, server_config, to_toml


def test_config_factory_merges_sections_over_the_cheap_base(tmp_path: Path) -> None:
    config = server_config(tmp_path / "data", auth={"grace_seconds": 2.5}, game={"tick_rate": 40.0})
    assert config.auth.scrypt_n == 16 and config.auth.grace_seconds == 2.5   # merged, not replaced
    assert config.auth.token_secret and config.host == "127.0.0.1" and config.port == 0
    assert config.store.resolved_url().startswith(f"file://{tmp_path / 'data'}")
    assert config.game.tick_rate == 40.0


def test_toml_form_reads_back_as_the_same_config(tmp_path: Path) -> None:
    data = config_dict(tmp_path / "data", port=8123, rooms=[
        {"name": "town"},
        {"name": "arena", "width": 200.0, "mobs": [{"id": 1, "kind": "slime", "x": 1.0, "y": 2.0, "hp": 30,
                                                     "xp": 7}]},
    ], game={"rules": {"dmg_min": 10, "dmg_max": 10}}, cluster={"rooms": ["town"], "redis_url": None})
    back = tomllib.loads(to_toml(data))
    del data["cluster"]["redis_url"]   # TOML has no null: None is left out
    assert back == data
    assert build_config(back) == build_config(data)


def test_chromium_is_what_which_finds_and_only_when_executable(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHROMIUM_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None and "BROWSER TESTS SKIPPED" in CHROMIUM_MISSING
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o644)
    assert find_chromium() is None            # present but not executable: not a browser to drive
    fake.chmod(0o755)
    assert find_chromium() == str(fake)
    monkeypatch.setenv("CHROMIUM_PATH", str(fake))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_chromium() == str(fake)
