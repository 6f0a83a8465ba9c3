"""The ``datastore`` CLI, run as a subprocess like an operator would."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datastore import Key, open_store


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "datastore.cli", *args], capture_output=True, text=True,
                            timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


@pytest.fixture
def filled(tmp_path: Path) -> str:
    url = f"file://{tmp_path}/db?durability=flush&segment_bytes=4096"

    async def fill() -> None:
        s = await open_store(url)
        for rnd in range(3):
            for i in range(30):
                await s.put(Key("game", "chars", i), {"xp": i * 10 + rnd, "name": f"c{i}", "b": b"\x01"})
        await s.put(Key("game", "chars", "7"), {"str": True})
        await s.delete(Key("game", "chars", 29))
        await s.close()

    asyncio.run(fill())
    return url


def test_stats_text_and_json(filled: str) -> None:
    assert "records" in cli("stats", "--store", filled).stdout
    st = cli_json("stats", "--store", filled)
    assert st["records"] == 30 and st["segments"] >= 2 and st["partitions_used"] >= 1


def test_get_parses_int_keys_unless_str_key(filled: str) -> None:
    rec = cli_json("get", "game", "chars", "7", "--store", filled)
    assert rec["key"] == 7 and rec["bins"]["xp"] == 72 and rec["generation"] == 3
    assert rec["bins"]["b"] == {"$bytes": "AQ=="}
    rec = cli_json("get", "game", "chars", "7", "--str-key", "--store", filled)
    assert rec["key"] == "7" and rec["bins"] == {"str": True}
    out = cli("get", "game", "chars", "3", "--store", filled).stdout
    assert "generation=3" in out and "xp = 32" in out


def test_get_absent_exits_1(filled: str) -> None:
    result = cli("get", "game", "chars", "29", "--store", filled, check=False)
    assert result.returncode == 1 and "not found" in result.stdout


def test_scan_lists_the_set(filled: str) -> None:
    recs = cli_json("scan", "game", "chars", "--store", filled)
    assert sorted(r["key"] for r in recs if isinstance(r["key"], int)) == list(range(29))
    assert "(30 records)" in cli("scan", "game", "chars", "--store", filled).stdout
    assert len(cli_json("scan", "game", "chars", "--limit", "5", "--store", filled)) == 5


def test_verify_and_compact(filled: str) -> None:
    assert cli_json("verify", "--store", filled)["ok"] is True
    report = cli_json("compact", "--store", filled)
    assert report["inputs"] and report["bytes_after"] < report["bytes_before"]
    assert "OK" in cli("verify", "--store", filled).stdout
    assert cli_json("stats", "--store", filled)["records"] == 30


def test_backup_then_restore_into_another_store(filled: str, tmp_path: Path) -> None:
    backup = tmp_path / "backup.msgpack"
    assert cli_json("backup", str(backup), "--store", filled)["records"] == 30
    other = f"file://{tmp_path}/restored"
    assert cli_json("restore", str(backup), "--store", other)["records"] == 30
    a = cli_json("scan", "game", "chars", "--store", filled)
    b = cli_json("scan", "game", "chars", "--store", other)
    key = lambda r: repr(r["key"])  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key)


def test_repair_fixes_a_damaged_log(filled: str, tmp_path: Path) -> None:
    seg = sorted((tmp_path / "db").glob("*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x55
    seg.write_bytes(bytes(data))
    result = cli("verify", "--store", filled, check=False)
    assert result.returncode == 2 and "corrupt_log" in result.stderr and seg.name in result.stderr
    out = cli_json("repair", "--store", filled)
    assert len(out["repaired"]) == 1
    assert cli_json("verify", "--store", filled)["ok"] is True


def test_errors_are_reported_with_their_code(tmp_path: Path) -> None:
    result = cli("stats", "--store", "bogus://x", check=False)
    assert result.returncode == 2 and "bad_url" in result.stderr
    result = cli("stats", "--store", "bogus://x", "--json", check=False)
    assert json.loads(result.stdout)["error"] == "bad_url"
    result = cli("stats", check=False)
    assert result.returncode == 2 and "--store" in result.stderr


def test_console_script_is_installed(filled: str) -> None:
    import shutil

    exe = shutil.which("datastore")
    if exe is None:
        pytest.skip("console script not on PATH")
    result = subprocess.run([exe, "stats", "--store", filled, "--json"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout)["records"] == 30
