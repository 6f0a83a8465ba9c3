"""``gameserver serve`` command line.

    gameserver serve [--host H] [--port P] [--data DIR | --store URL] [--config FILE] [--log-level L]
    gameserver demo  [--port P] [--data DIR] [--bots N] [--duration S] [--room R]   (server + demo bots)

Every flag can also come from ``GAMESERVER_*`` environment variables (see ``gameserver.config``); flags win.
SIGTERM / SIGINT stop gracefully (``bye shutdown``, flush, close the store); a second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from typing import Any

from . import logs
from .config import ConfigError, ServerConfig, load_config

log = logging.getLogger("gameserver.cli")

GC_GEN0_THRESHOLD = 20_000   # allocations between young collections (CPython default: 700)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gameserver", description="Websocket game server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8765; 0 = any free port)")
    serve.add_argument("--data", help="directory of the embedded datastore (default ./data)")
    serve.add_argument("--store", help="datastore URL (memory://, file:///dir?durability=..., ...)")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--tick-rate", type=float, help="ticks per second (default 20)")
    sub.add_parser("demo", help="run the server on the embedded datastore plus demo bots "
                   "(see `gameserver demo --help`)")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.host is not None:
        out["host"] = args.host
    if args.port is not None:
        out["port"] = args.port
    if args.log_level is not None:
        out["log_level"] = args.log_level
    store: dict[str, Any] = {}
    if args.data is not None:
        store["data_dir"] = args.data
        store["url"] = None
    if args.store is not None:
        store["url"] = args.store
    if store:
        out["store"] = store
    if args.tick_rate is not None:
        out["game"] = {"tick_rate": args.tick_rate}
    return out


def tune_gc() -> None:
    """Keep the cyclic GC off the tick's critical path.

    Everything alive after start-up (recovered store index, leaderboard, world) is frozen out of the
    collector's scans, and young collections run less often: a tick allocates many short-lived lists
    that reference counting frees anyway. Measured with ``loadtest/bench_server.py``: tick-work p99
    spikes were GC pauses.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def serve(config: ServerConfig, config_path: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    from .app import GameServer

    server = GameServer(config, config_path=config_path)
    await server.start()
    tune_gc()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logs.event(log, "signal", signal=signal.Signals(signum).name, action="graceful_stop")
            stop.set()
        else:
            logs.event(log, "signal", level=logging.WARNING, signal=signal.Signals(signum).name,
                       action="forced_exit")
            os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    print(f"gameserver listening on ws://{config.host}:{server.port}/ws", flush=True)
    await stop.wait()
    await server.stop()
    return 0


def run(coro: Any, use_uvloop: bool = True) -> Any:
    """Run a coroutine on uvloop when installed (and wanted), else asyncio."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        # The demo (server + in-process bots) lives with the bots; its flags are its own.
        from loadtest.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, overrides=overrides_from_args(args))
    except ConfigError as exc:
        print(f"gameserver: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    if args.command == "serve":
        try:
            return int(run(serve(config, args.config), config.use_uvloop))
        except ConfigError as exc:
            print(f"gameserver: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
