"""``gameserver serve`` command line, plus the subcommands other packages register.

    gameserver serve [--host H] [--port P] [--data DIR | --store URL] [--config FILE] [--log-level L]
    gameserver demo  [--port P] [--data DIR] [--bots N] [--duration S] [--room R]   (server + demo bots)

Every flag can also come from ``GAMESERVER_*`` environment variables (see ``gameserver.config``); flags win.
SIGTERM / SIGINT stop gracefully (``bye shutdown``, flush, close the store); a second signal exits at once.

Subcommands other than ``serve`` are found through the ``gameserver.commands`` entry-point group (each a
``main(argv) -> int``): ``demo`` is ``loadtest.demo:main``, registered in pyproject, so the product never
imports its load tools.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import importlib.metadata
import logging
import os
import signal
import sys
from typing import Any

from . import logs
from .config import ConfigError, ServerConfig, load_config

log = logging.getLogger("gameserver.cli")

GC_GEN0_THRESHOLD = 20_000   # allocations between young collections (CPython default: 700)


COMMANDS_GROUP = "gameserver.commands"


def plugin_commands() -> dict[str, importlib.metadata.EntryPoint]:
    """Subcommands registered by installed packages (entry-point group ``gameserver.commands``)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP) if ep.name != "serve"}


def build_parser(plugins: dict[str, importlib.metadata.EntryPoint] | None = None) -> argparse.ArgumentParser:
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
    for name, ep in sorted((plugins or {}).items()):
        sub.add_parser(name, help=f"from {ep.value} (see `gameserver {name} --help`)", add_help=False)
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


def _store_directory(config: ServerConfig) -> str:
    """The data directory of a file store URL (what a person named with --data or --store)."""
    url = config.store.resolved_url()
    try:
        from datastore.url import file_directory

        return file_directory(url)
    except Exception:
        return url


def startup_failure(exc: BaseException, config: ServerConfig) -> tuple[str, int] | None:
    """(one line for the operator, exit code) when ``exc`` is a start-up failure they can fix; else None.

    Bad store URL or option: exit 2 (like any bad configuration). Port taken, data directory that cannot be
    created or is locked by another server, unreachable store: exit 1.
    """
    from datastore import DatastoreError, InvalidURLError, StoreLockedError

    host, port = config.host, config.port
    if isinstance(exc, InvalidURLError):
        return f"invalid store URL: {exc}", 2
    if isinstance(exc, StoreLockedError):
        return f"data directory {_store_directory(config)} is locked by another server", 1
    if isinstance(exc, DatastoreError):
        return f"cannot open the datastore: {exc}", 1
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is already in use", 1
        reason = exc.strerror or str(exc)
        if exc.filename is not None:   # makedirs / open of the store directory
            return f"cannot create or open data directory {exc.filename}: {reason}", 1
        return f"cannot listen on {host}:{port}: {reason}", 1
    return None


async def _undo_failed_start(server: Any) -> None:
    """Close what a failed ``start`` opened (flusher, store), quietly: the operator gets one line."""
    with contextlib.suppress(Exception):
        characters = getattr(server, "characters", None)
        if characters is not None:
            await characters.stop_flusher()
        if server.store is not None and server._own_store:
            await server.store.close()


async def serve(config: ServerConfig, config_path: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code.

    Signal handlers are installed before anything opens (a SIGTERM that arrives while the port is just
    open still stops cleanly with 0). A start-up failure the operator can fix prints one line, no traceback.
    """
    from .app import GameServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            logs.event(log, "signal", say=f"{name} received: stopping gracefully (again to exit at once).",
                       signal=name, action="graceful_stop")
            stop.set()
        else:
            logs.event(log, "signal", level=logging.WARNING, say=f"{name} received again: exiting now.",
                       signal=name, action="forced_exit")
            os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    server = GameServer(config, config_path=config_path)   # room types import here (ConfigError: exit 2)
    try:
        await server.start()
    except Exception as exc:
        failure = startup_failure(exc, config)
        if failure is None:
            raise
        await _undo_failed_start(server)
        print(f"gameserver: {failure[0]}", file=sys.stderr, flush=True)
        return failure[1]
    tune_gc()
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
    plugins = plugin_commands()
    if argv[:1] and argv[0] in plugins:   # a registered subcommand: its flags are its own
        try:
            command = plugins[argv[0]].load()
        except Exception as exc:
            print(f"gameserver: command {argv[0]!r} ({plugins[argv[0]].value}) cannot be loaded: {exc}",
                  file=sys.stderr)
            return 1
        return int(command(argv[1:]) or 0)
    args = build_parser(plugins).parse_args(argv)
    try:
        config = load_config(args.config, overrides=overrides_from_args(args))
    except ConfigError as exc:
        print(f"gameserver: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    try:
        return int(run(serve(config, args.config), config.use_uvloop))
    except ConfigError as exc:
        print(f"gameserver: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
