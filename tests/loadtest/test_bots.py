"""Demo bots against a real in-process GameServer (file store on tmp_path, free port)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gameserver.app import GameServer
from gameserver.config import load_config
from loadtest.bots import Bot, BotConfig, BotReport, bot_name, bot_secret, main, percentile, run_bots
from loadtest.demo import run_demo

pytestmark = pytest.mark.slow


async def _start_server(data_dir: Path) -> tuple[Any, int]:
    config = load_config(
        None,
        environ={},
        overrides={"host": "127.0.0.1", "port": 0,
                   "store": {"data_dir": str(data_dir), "durability": "flush"}},
    )
    server = GameServer(config)
    port = await server.start()
    return server, port


def test_bot_names_and_secrets_are_stable_and_valid() -> None:
    assert bot_name(0) == "bot0001"
    assert bot_name(41) == "bot0042"
    secret = bot_secret("bot0001")
    assert secret == bot_secret("bot0001") != bot_secret("bot0002")
    assert 16 <= len(secret) <= 128


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99


async def test_bots_play_in_forest_then_rerun_reuses_characters(tmp_path: Path) -> None:
    server, port = await _start_server(tmp_path / "data")
    url = f"ws://127.0.0.1:{port}/ws"
    lines: list[str] = []
    try:
        report = await asyncio.wait_for(
            run_bots(url, 10, 8.0, "forest", seed=7, on_summary=lines.append, summary_every=1.0), 60
        )
        assert isinstance(report, BotReport)
        assert report.errors == [], report.format()
        assert report.logged_in == 10
        assert report.messages_in > 100 and report.messages_out > 100
        assert report.pings > 0 and report.rtt_p99_ms > 0
        assert report.attacks > 0
        assert report.hits > 0 or report.kills > 0
        assert lines and "online" in lines[-1]

        # second run: same names, same secrets -> login (no auth_failed), characters reused
        again = await asyncio.wait_for(run_bots(url, 3, 2.0, "forest", seed=8), 30)
        assert again.errors == [], again.format()
        assert again.logged_in == 3
    finally:
        await asyncio.wait_for(server.stop(), 30)


async def test_bots_stop_early_on_stop_event(tmp_path: Path) -> None:
    server, port = await _start_server(tmp_path / "data")
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(run_bots(f"ws://127.0.0.1:{port}/ws", 3, 0, "forest", 1, stop_event=stop))
        await asyncio.sleep(2.0)
        stop.set()
        report = await asyncio.wait_for(task, 15)
        assert report.errors == [], report.format()
        assert report.logged_in == 3
    finally:
        await asyncio.wait_for(server.stop(), 30)


async def test_demo_runs_server_and_bots_then_shuts_down(tmp_path: Path) -> None:
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_demo("127.0.0.1", 0, str(tmp_path / "data"), bots=4, duration=0, room="forest",
                 stop_event=stop, out=lines.append)
    )
    for _ in range(100):  # wait for the banner (bounded)
        if any("/health" in line for line in lines):
            break
        await asyncio.sleep(0.05)
    health_url = next(line.split(": ", 1)[1].strip() for line in lines if "/health" in line)
    await asyncio.sleep(2.5)
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(health_url, timeout=5).read())
    health = json.loads(body)
    assert health.get("sessions", 0) >= 1
    # the printed monitor link carries the run's admin token: the stats API accepts it
    monitor_url = next(line.split(": ", 1)[1].strip() for line in lines if "/monitor?token=" in line)
    stats_url = monitor_url.replace("/monitor?", "/api/stats?")
    stats = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(stats_url, timeout=5).read()))
    assert stats["sessions"] >= 1
    stop.set()
    report = await asyncio.wait_for(task, 30)
    assert report.errors == [], report.format()
    assert report.logged_in == 4
    assert lines[-1] == "server stopped"


def test_gamebots_cli_exit_code_nonzero_when_server_missing(capsys: pytest.CaptureFixture[str]) -> None:
    # nothing listens on port 9 of localhost: every bot fails to log in -> unexpected errors -> exit 1
    code = main(["--url", "ws://127.0.0.1:9/ws", "--players", "2", "--duration", "2", "--quiet"])
    assert code == 1
    assert "never logged in" in capsys.readouterr().out


async def test_bot_resumes_after_its_socket_drops(tmp_path: Path) -> None:
    server, port = await _start_server(tmp_path / "data")
    stop = asyncio.Event()
    cfg = BotConfig(url=f"ws://127.0.0.1:{port}/ws", room="forest", seed=3, deadline=time.monotonic() + 20)
    bot = Bot(0, cfg, stop)
    try:
        task = asyncio.create_task(bot.run())
        for _ in range(100):  # bounded wait until the bot plays
            if bot.stats.online:
                break
            await asyncio.sleep(0.05)
        assert bot.stats.online
        session = bot.client.session
        bot.client._conn.ws.transport.abort()  # drop the TCP connection under the client
        client = bot.client
        for _ in range(100):   # the client resumes by itself
            if client.resumes:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 15)
        assert bot.stats.errors == []   # a seq gap or duplicate would be one
        assert bot.stats.drops == 1 and bot.stats.resumes == 1 and bot.stats.logins == 1
        assert bot.stats.relogins == 0 and bot.stats.unrecovered == 0
        assert client.seq.last > 0 and client.seq.failures == 0
        assert session is not None
    finally:
        await asyncio.wait_for(server.stop(), 30)


async def test_bots_log_in_again_after_a_server_restart(tmp_path: Path) -> None:
    server, port = await _start_server(tmp_path / "data")
    stop = asyncio.Event()
    task = asyncio.create_task(run_bots(f"ws://127.0.0.1:{port}/ws", 2, 25.0, "forest", 1, stop_event=stop))
    try:
        await asyncio.sleep(2.0)
        await asyncio.wait_for(server.stop(), 30)
        server, _ = await _start_server_on(tmp_path / "data", port)
        await asyncio.sleep(6.0)  # bots back off (< 5 s) and come back: resume refused -> login
        stop.set()
        report = await asyncio.wait_for(task, 20)
        assert report.errors == [], report.format()
        assert report.drops >= 2 and report.relogins >= 2
    finally:
        stop.set()
        await asyncio.wait_for(server.stop(), 30)


async def _start_server_on(data_dir: Path, port: int) -> tuple[Any, int]:
    config = load_config(None, environ={}, overrides={
        "host": "127.0.0.1", "port": port, "store": {"data_dir": str(data_dir), "durability": "flush"}})
    server = GameServer(config)
    return server, await server.start()


async def test_bots_wait_out_a_full_server_without_errors(tmp_path: Path) -> None:
    """3 bots, room for 2: the third is refused (server_full), waits, gets in when a place frees up."""
    config = load_config(None, environ={}, overrides={
        "host": "127.0.0.1", "port": 0, "store": {"data_dir": str(tmp_path / "data"), "durability": "flush"},
        "limits": {"max_sessions": 2, "full_retry_after": 1.0},
        "auth": {"grace_seconds": 0.5, "scrypt_n": 16}})
    server = GameServer(config)
    port = await server.start()
    url = f"ws://127.0.0.1:{port}/ws"
    stop = asyncio.Event()
    try:
        cfg = BotConfig(url=url, room="forest", seed=5, deadline=time.monotonic() + 25)
        bots = [Bot(i, cfg, stop) for i in range(3)]
        tasks = [asyncio.create_task(b.run()) for b in bots[:2]]
        for _ in range(100):
            if all(b.stats.online for b in bots[:2]):
                break
            await asyncio.sleep(0.05)
        third = asyncio.create_task(bots[2].run())
        await asyncio.sleep(2.5)
        assert not bots[2].stats.logged_in and bots[2].stats.errors == []
        bots[0].stop = asyncio.Event()
        bots[0].stop.set()                      # one leaves; its session ends after the 0.5 s grace
        for _ in range(200):
            if bots[2].stats.online:
                break
            await asyncio.sleep(0.05)
        assert bots[2].stats.online and bots[2].stats.refused >= 1
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, third), 15)
        assert [b.stats.errors for b in bots] == [[], [], []]
    finally:
        stop.set()
        await asyncio.wait_for(server.stop(), 30)
