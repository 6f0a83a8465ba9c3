"""`gameserver demo`: the game server on its embedded datastore plus a crowd of bots, in one process.

    python -m loadtest.demo --bots 50 --room forest            # until Ctrl-C
    python -m loadtest.demo --bots 20 --duration 30 --port 0   # 30 s on a free port

Prints where to connect (websocket, browser client, /health, /metrics), runs until Ctrl-C / SIGTERM or
`--duration`, then stops the bots and shuts the server down cleanly (bye shutdown, characters flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Callable
from typing import Any

from loadtest.bots import BotReport, run_bots


def _build_server(host: str, port: int, data_dir: str, config_file: str | None) -> Any:
    from gameserver.app import GameServer
    from gameserver.config import load_config

    overrides: dict[str, Any] = {"host": host, "port": port, "store": {"data_dir": data_dir}}
    config = load_config(config_file, overrides=overrides)
    if config.admin_token is None:   # the demo opens the monitor page too: make up a token for this run
        config = config.model_copy(update={"admin_token": secrets.token_urlsafe(16)})
    return GameServer(config)


async def run_demo(
    host: str = "127.0.0.1",
    port: int = 8765,
    data_dir: str = "./data",
    bots: int = 50,
    duration: float = 0.0,
    room: str = "forest",
    *,
    seed: int = 1,
    config_file: str | None = None,
    stop_event: asyncio.Event | None = None,
    out: Callable[[str], None] = print,
    live: bool = True,
) -> BotReport:
    """Start the server and `bots` bots; run until `stop_event` (or `duration` s when > 0); stop both.

    Returns the bots' report. The server always stops, also when the bots fail.
    """
    stop = stop_event or asyncio.Event()
    server = _build_server(host, port, data_dir, config_file)
    bound = await server.start()
    bound_port = bound if isinstance(bound, int) and bound > 0 else port
    base = f"{host}:{bound_port}"
    out(f"game server on {base} (data: {data_dir})")
    out(f"  websocket : ws://{base}/ws")
    out(f"  browser   : http://{base}/")
    out(f"  health    : http://{base}/health")
    out(f"  metrics   : http://{base}/metrics")
    out(f"  monitor   : http://{base}/monitor?token={server.config.admin_token}")
    until = f" for {duration:g}s" if duration > 0 else " (Ctrl-C to stop)"
    out(f"  bots      : {bots} in room {room!r}{until}")
    try:
        return await run_bots(
            f"ws://{base}/ws", bots, duration, room, seed,
            ramp=min(5.0, bots * 0.02), stop_event=stop,
            on_summary=out if live else None, summary_every=2.0,
        )
    finally:
        stop.set()
        out("stopping: bots done, shutting the server down ...")
        await server.stop()
        out("server stopped")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gameserver demo", description="Run the game server with demo bots.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 = any free port")
    p.add_argument("--data", default="./data", help="directory of the embedded datastore")
    p.add_argument("--config", default=None, help="server config file (TOML)")
    p.add_argument("--bots", type=int, default=50, help="number of bots")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    p.add_argument("--room", default="forest", help="room the bots play in")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no live summary line")
    return p


async def _main_async(args: argparse.Namespace) -> BotReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # second Ctrl-C: do not wait for a clean shutdown
            print("forced exit", file=sys.stderr, flush=True)
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    return await run_demo(
        args.host, args.port, args.data, args.bots, args.duration, args.room,
        seed=args.seed, config_file=args.config, stop_event=stop, live=not args.quiet,
        out=lambda line: print(line, flush=True),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m loadtest.demo` and `gameserver demo`; 0 when the bots saw no errors."""
    from gameserver import logs

    args = build_parser().parse_args(argv)
    logs.configure("WARNING", "kv")   # people read the demo: sentences, and only what needs attention
    report = asyncio.run(_main_async(args))
    print(report.format(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
