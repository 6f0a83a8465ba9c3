"""Fixtures for end-to-end tests of the web client and the monitor in headless Chromium.

The real ``GameServer`` runs in a background thread with its own event loop (Playwright's sync API drives
the browser from the test thread). Chromium is the executable ``chromium`` that ``shutil.which`` finds
(Debian's, which ``.ci/run`` installs; ``CHROMIUM_PATH`` names another) driven by Playwright for Python with
``executable_path``: nothing is downloaded at run time. Without one, the tests that need a browser skip
with one reason (``CHROMIUM_MISSING``); the HTTP tests of the pages run anyway.

Screenshots go to a temp directory (printed at the end of the session); with ``SAVE_DOCS_SCREENSHOTS=1`` the
game and monitor screenshots are also written to ``docs/screenshots/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gameserver.app import GameServer
from tests.support import CHROMIUM_MISSING, find_chromium, server_config

LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ADMIN_TOKEN = "browser-test-admin-token-0123456789"
REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"

# Forest of the test world: mob 1 stands 80 units right of the spawn point (the room's centre), weak enough
# to die in a few hits, so "walk to a mob and kill it" takes seconds.
NEAR_MOB = {"id": 1, "kind": "slime", "x": 580.0, "y": 500.0, "hp": 30, "xp": 25}


def make_config(tmp: Path) -> Any:
    return server_config(tmp / "data", admin_token=ADMIN_TOKEN, rooms=[
        {"name": "town"},
        {"name": "forest", "mobs": [NEAR_MOB], "mob_count": 4, "mob_kind": "wolf", "mob_hp": 100},
        {"name": "dungeon", "mob_count": 4, "mob_kind": "skeleton", "mob_hp": 150},
        {"name": "tag", "type": "examples.tag.tag_game:TagRoom"},           # rooms of other types
        {"name": "echo-1", "type": "tests.gameserver.sample_rooms:EchoRoom",
         "options": {"greeting": "hello"}},
    ])


@dataclass
class LiveServer:
    """A GameServer running on its own loop in a background thread."""

    base_url: str
    server: Any
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as res:
                return res.status, res.headers.get("Content-Type", ""), res.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = GameServer(make_config(tmp_path_factory.mktemp("browser-server")))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gameserver", daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
    port = port if isinstance(port, int) else server.port
    live = LiveServer(f"http://127.0.0.1:{port}", server, loop, thread)
    try:
        _require_web_routes(live)
        yield live
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)


def _require_web_routes(live: LiveServer) -> None:
    """Fail loudly (not skip: the feature would be missing) when the transport does not serve the pages."""
    checks = [("/", "text/html"), ("/static/game.js", "javascript"), ("/monitor", "text/html")]
    for path, kind in checks:
        status, content_type, _ = live.get(path)
        if status != 200 or kind not in content_type:
            pytest.fail(
                f"GET {path} -> {status} {content_type!r}: the web UI is not wired into the transport. "
                "gameserver.transport.Transport._process_request must answer every path other than "
                "/ws, /health and /metrics with gameserver.webui.http_response(server, request.path, "
                "request.headers) when that returns a (status, content_type, body) tuple."
            )
    status, _, _ = live.get("/api/stats", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if status != 200:
        pytest.fail(f"GET /api/stats with the admin token -> {status}: route it to webui.http_response")


@dataclass
class Browser:
    browser: Any
    artifacts: Path
    pages: list[Any] = field(default_factory=list)
    errors: dict[int, list[str]] = field(default_factory=dict)

    def new_page(self, width: int = 1100, height: int = 820) -> Any:
        """A page in a fresh context (own localStorage), recording console errors and failed requests."""
        context = self.browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("requestfailed", lambda req: errors.append(f"requestfailed: {req.url}"))
        self.errors[id(page)] = errors
        self.pages.append(page)
        return page

    def errors_of(self, page: Any) -> list[str]:
        return self.errors[id(page)]

    def screenshot(self, page: Any, name: str, docs: bool = False) -> Path:
        """Save ``name``.png in the artifact dir; with ``docs`` also in docs/screenshots when
        SAVE_DOCS_SCREENSHOTS=1."""
        path = self.artifacts / f"{name}.png"
        page.screenshot(path=str(path))
        _SAVED.append(path)
        if docs and os.environ.get("SAVE_DOCS_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
        return path


@pytest.fixture(scope="session")
def browser_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-artifacts")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = find_chromium()
    if executable is None:
        pytest.skip(CHROMIUM_MISSING)
    from playwright.sync_api import sync_playwright  # a dev dependency: missing is a broken install

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=LAUNCH_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Any, browser_artifacts: Path) -> Iterator[Browser]:
    b = Browser(chromium, browser_artifacts)
    try:
        yield b
    finally:
        for page in b.pages:
            page.context.close()


_SAVED: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SAVED:
        terminalreporter.write_line("browser screenshots: " + ", ".join(str(p) for p in _SAVED))
