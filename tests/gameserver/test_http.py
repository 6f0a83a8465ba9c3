"""HTTP endpoints, graceful shutdown, and the CLI as a real subprocess (SIGTERM, SIGKILL + restart)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from loadtest.procs import free_port
from shared.client import GameClient

from .conftest import SECRET, Raw


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_health_and_metrics(server, clients):
    c: Raw = await clients(server)
    await c.login("metered")
    await c.request({"t": "ping"})
    status, body = await _http_get(server.port, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["sessions"] == 1
    assert health["rooms"]["town"] == 1
    # lag in ms of the latest second of 50 Hz ticks: the rooms tick, and close to their deadlines
    assert isinstance(health["tick_lag"], float) and health["tick_lag"] < 500.0, health
    status, body = await _http_get(server.port, "/metrics")
    text = body.decode()
    assert status == 200
    ticks = [line for line in text.splitlines()
             if line.startswith('gameserver_tick_duration_seconds_count{room="town"}')]
    assert ticks and float(ticks[0].split()[-1]) > 0, ticks
    for name in ("gameserver_sessions 1.0", 'gameserver_messages_in_total{type="ping"}',
                 'gameserver_messages_out_total{type="welcome"}', "gameserver_bytes_in_total",
                 "gameserver_tick_duration_seconds_bucket", "gameserver_tick_lag_seconds",
                 'gameserver_datastore_op_seconds_count{op="put"}', "gameserver_cas_retries_total",
                 "gameserver_queue_drops_total", "gameserver_coalesced_ticks_total",
                 "gameserver_disconnects_total"):
        assert name in text, name


async def test_graceful_shutdown_sends_bye_and_persists(start_server, make_config, clients):
    config = make_config(persist={"flush_interval": 60.0})   # only the shutdown flush can save the move
    server = await start_server(config)
    c: Raw = await clients(server)
    await c.login("leaver")
    await asyncio.sleep(0.1)
    await c.send({"t": "move", "x": 525.0, "y": 500.0})
    await c.expect("tick")
    reader = asyncio.ensure_future(c.closed())
    await server.stop()
    assert (await reader)[-1] == {"t": "bye", "reason": "shutdown"}
    again = await start_server(config)
    c2: Raw = await clients(again)
    welcome, _ = await c2.login("leaver")
    assert welcome["character"]["x"] == 525.0


async def _start_cli(data: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "GAMESERVER_AUTH__GRACE_SECONDS": "1", "GAMESERVER_PERSIST__FLUSH_INTERVAL": "0.3",
           "GAMESERVER_TOKEN_SECRET": "cli-secret-0123456789abcdef"}
    argv = [sys.executable, "-m", "gameserver", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data", str(data), *extra]
    # Popen returns at once; readiness is polled below without blocking the loop
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: ASYNC220
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode() if proc.stderr else "server did not start")


async def test_cli_sigterm_graceful_and_sigkill_keeps_acknowledged_state(tmp_path):
    port = free_port()
    proc = await _start_cli(tmp_path / "data", port)
    try:
        c = await GameClient.connect(f"ws://127.0.0.1:{port}/ws", binary=True)
        await c.login("cliuser", SECRET)
        await c.join("forest")
        await asyncio.sleep(0.2)
        x, y = c.world.position
        await c.move(x + 30, y)
        await asyncio.sleep(1.0)              # > flush interval: the position is on disk
        proc.send_signal(signal.SIGKILL)      # crash: no shutdown flush
        proc.wait(5)
        await c.close()
        proc = await _start_cli(tmp_path / "data", port)
        c = await GameClient.connect(f"ws://127.0.0.1:{port}/ws", binary=True)
        welcome = await c.login("cliuser", SECRET)
        assert welcome.character.room == "forest" and welcome.character.x == x + 30
        got: list = []

        async def read_all() -> None:
            async for msg in c:
                got.append(msg)

        reader = asyncio.ensure_future(read_all())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        await asyncio.wait_for(reader, 5)
        assert any(getattr(m, "t", None) == "bye" and m.reason == "shutdown" for m in got)
        logs = proc.stderr.read().decode()
        assert '"event":"stopped"' in logs and "Traceback" not in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_rejects_bad_config_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('port = "nope"\n[game]\ntick_rate = -1\n')
    out = subprocess.run([sys.executable, "-m", "gameserver", "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr and "port" in out.stderr and "game.tick_rate" in out.stderr


async def test_health_is_a_readiness_probe_503_while_starting_and_stopping(make_config):
    from gameserver.app import GameServer

    server = GameServer(make_config())
    assert server.health()["status"] == "starting"      # constructed, not started: not ready
    port = await server.start()
    status, body = await _http_get(port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    server.stopping = True                               # what stop() sets first
    status, body = await _http_get(port, "/health")
    assert status == 503 and json.loads(body)["status"] == "stopping"
    server.stopping = False
    await server.stop()


async def test_message_and_byte_counts_are_exact_on_every_read(server, clients):
    """The router tallies client messages and bytes as plain ints; /metrics and the registry (what the
    monitor reads) both see every one of them, and a second read adds nothing."""
    c: Raw = await clients(server)
    await c.login("counted")

    def counts(text: str) -> tuple[float, float]:
        moves = bytes_in = 0.0
        for line in text.splitlines():
            if line.startswith('gameserver_messages_in_total{type="move"}'):
                moves = float(line.split()[-1])
            elif line.startswith("gameserver_bytes_in_total "):
                bytes_in = float(line.split()[-1])
        return moves, bytes_in

    _, body = await _http_get(server.port, "/metrics")
    moves0, bytes0 = counts(body.decode())
    sent = 0
    for i in range(37):
        frame = c.encode({"t": "move", "x": 500.0 + i, "y": 500.0})
        sent += len(frame)
        await c.ws.send(frame)
    await c.request({"t": "ping"})   # answered after the moves were handled
    sent += len(c.encode({"t": "ping", "rid": c.rid}))
    _, body = await _http_get(server.port, "/metrics")
    moves1, bytes1 = counts(body.decode())
    assert moves1 - moves0 == 37 and bytes1 - bytes0 == sent
    samples = {s.name: s.value for fam in server.metrics.registry.collect() for s in fam.samples
               if s.name == "gameserver_messages_in_total" and s.labels.get("type") == "move"}
    assert samples == {"gameserver_messages_in_total": moves1}   # collecting again adds nothing
