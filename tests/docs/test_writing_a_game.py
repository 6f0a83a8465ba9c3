"""docs/writing-a-game.md is followed verbatim: its files are written out as they are, its test passes, and
its client plays against `gameserver serve --config server.toml`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from loadtest.procs import free_port, stop_process, wait_healthy

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-game.md"
BLOCK = re.compile(r"```(?:python|toml)\n(# file: (\S+)\n.*?)```", re.S)


def write_files(root: Path) -> dict[str, Path]:
    files = {}
    for body, name in BLOCK.findall(DOC.read_text()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        files[name] = path
    return files


def test_the_tutorial_files_pass_their_test_and_play(tmp_path: Path) -> None:
    files = write_files(tmp_path)
    assert set(files) == {"mygame/dice.py", "mygame/server.toml", "mygame/play.py", "mygame/test_dice.py"}
    game = tmp_path / "mygame"
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_dice.py"],
                          cwd=game, capture_output=True, text=True, timeout=120)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "1 passed" in test.stdout

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gameserver.cli", "serve", "--config", "server.toml",
                               "--data", "./data", "--port", str(port)], cwd=game,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, server)
        play = subprocess.run([sys.executable, "play.py", f"ws://127.0.0.1:{port}/ws"], cwd=game,
                              capture_output=True, text=True, timeout=60)
        assert play.returncode == 0, play.stderr
        lines = play.stdout.splitlines()
        assert lines[0] == "joined dice prize 20"
        assert [line.split()[-1] for line in lines[1:]] == ["1", "2", "3"]     # rolls counted in data
    finally:
        stop_process(server)
