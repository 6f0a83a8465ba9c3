"""The web client (`/`) and the monitor (`/monitor`) end to end in headless Chromium against the real
GameServer, plus the pure parts of `gameserver.webui` (static files, admin token, stats shape).

Every browser wait is bounded (Playwright timeouts or explicit deadlines).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from gameserver import webui
from shared.client import GameClient

from .conftest import ADMIN_TOKEN, NEAR_MOB, Browser, LiveServer

ATTACK_RANGE = 64.0


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def state(page: Any, expr: str) -> Any:
    return page.evaluate(f"window.gameState.{expr}")


def log_in(page: Any, live: LiveServer, name: str) -> None:
    page.goto(live.base_url + "/")
    page.wait_for_selector("#login:not([hidden])", timeout=10_000)
    page.fill("#name", name)
    page.click("#login-button")
    page.wait_for_function(
        "window.gameState.status === 'online' && window.gameState.me !== null", timeout=10_000
    )


def position(page: Any) -> tuple[float, float]:
    me = state(page, "me")
    return me["x"], me["y"]


def wait_until_still(page: Any, timeout: float = 5.0) -> tuple[float, float]:
    """Own position once it stopped changing for 0.3 s."""
    deadline = time.monotonic() + timeout
    last = position(page)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = position(page)
        if now == last:
            return now
        last = now
    raise AssertionError(f"player still moving after {timeout} s")


def hold_key(page: Any, key: str, seconds: float) -> None:
    page.keyboard.down(key)
    time.sleep(seconds)
    page.keyboard.up(key)


def click_world(page: Any, x: float, y: float) -> None:
    """Click the canvas at room coordinates (x, y)."""
    box = page.locator("#world").bounding_box()
    w, h = state(page, "bounds")
    page.mouse.click(box["x"] + box["width"] * x / w, box["y"] + box["height"] * y / h)


# ------------------------------------------------------------------------------------ browser, game page

def test_game_page_loads_without_console_errors(live_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(live_server.base_url + "/")
    page.wait_for_selector("#login:not([hidden])", timeout=10_000)
    assert page.title() == "gamebackend"
    assert page.text_content("#status") == "offline"
    secret = page.evaluate("localStorage.getItem('gamebackend.secret')")
    assert secret and len(secret) >= 24
    page.fill("#name", unique_name("load"))
    page.click("#login-button")
    page.wait_for_function("window.gameState.status === 'online'", timeout=10_000)
    page.wait_for_function("document.querySelector('#leaderboard').childElementCount > 0", timeout=10_000)
    assert browser.errors_of(page) == []


def test_player_logs_in_moves_kills_a_mob_and_sees_xp_rise(live_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    name = unique_name("hero")
    log_in(page, live_server, name)
    assert state(page, "room") == "town"
    assert page.get_attribute("#status", "data-state") == "online"
    assert page.text_content("#level") == "1"

    # Keyboard: about 0.5 s of ArrowRight at 300 units/s, then S (WASD) down.
    x0, y0 = wait_until_still(page)
    page.locator("#world").focus()
    hold_key(page, "ArrowRight", 0.5)
    x1, y1 = wait_until_still(page)
    assert 60 <= x1 - x0 <= 260 and y1 == y0
    hold_key(page, "KeyS", 0.3)
    x2, y2 = wait_until_still(page)
    assert x2 == x1 and 30 <= y2 - y1 <= 180

    # Join the forest with its button, walk next to the mob by clicking the canvas.
    page.click("#rooms button[data-room=forest]")
    page.wait_for_function("window.gameState.room === 'forest'", timeout=10_000)
    mob_id = NEAR_MOB["id"]
    mob = state(page, f"mobs[{mob_id}]")
    assert mob["hp"] == NEAR_MOB["hp"]
    click_world(page, mob["x"] - 20, mob["y"])
    page.wait_for_function(
        "([x, y, r]) => { const me = window.gameState.me; return Math.hypot(me.x - x, me.y - y) <= r; }",
        arg=[mob["x"], mob["y"], ATTACK_RANGE - 10], timeout=10_000,
    )
    wait_until_still(page)

    # Space attacks the nearest living mob until it dies and the XP arrives.
    deadline = time.monotonic() + 20
    while state(page, "xp") == 0:
        assert time.monotonic() < deadline, f"no xp after 20 s; last error {state(page, 'lastError')}"
        page.keyboard.press("Space")
        time.sleep(0.3)
    page.wait_for_function(f"window.gameState.xp === {NEAR_MOB['xp']}", timeout=10_000)
    page.wait_for_function(f"document.querySelector('#xp').dataset.xp === '{NEAR_MOB['xp']}'", timeout=5_000)
    assert state(page, "lastHit")["mob"] == mob_id
    assert state(page, f"mobs[{mob_id}].hp") == 0
    assert page.text_content("#level") == "1"
    assert page.evaluate("document.querySelector('#xp-fill').style.width") == "25%"
    page.wait_for_function(
        "([n, xp]) => [...document.querySelectorAll('#leaderboard li')]"
        "  .some(li => li.textContent.startsWith(n) && li.textContent.endsWith(`${xp} xp`))",
        arg=[name, NEAR_MOB["xp"]], timeout=10_000,
    )
    browser.screenshot(page, "game", docs=True)

    # The dead mob comes back through tick.mobs (default respawn 5 s).
    page.wait_for_function(f"window.gameState.mobs[{mob_id}].hp === {NEAR_MOB['hp']}", timeout=15_000)
    assert browser.errors_of(page) == []


def test_unknown_room_and_out_of_range_errors_are_shown(live_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, live_server, unique_name("err"))
    page.evaluate("window.game.join('nowhere')")
    page.wait_for_function("document.querySelector('#notice').textContent.startsWith('no_such_room')",
                           timeout=10_000)
    page.click("#rooms button[data-room=dungeon]")
    page.wait_for_function("window.gameState.room === 'dungeon'", timeout=10_000)
    page.locator("#world").focus()
    page.keyboard.press("Space")  # dungeon mobs stand on a grid far from the centre
    page.wait_for_function("window.gameState.lastError && window.gameState.lastError.code === 'out_of_range'",
                           timeout=10_000)
    assert page.is_visible("#notice")


def test_rooms_of_other_types_show_players_fields_chat_and_their_own_messages(
        live_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    name = unique_name("tagger")
    log_in(page, live_server, name)
    page.fill("#join-room", "tag")
    page.press("#join-room", "Enter")
    page.wait_for_function("window.gameState.room === 'tag'", timeout=10_000)
    page.wait_for_function("n => document.querySelector('#player-list').dataset.names.includes(n)",
                           arg=name, timeout=5_000)
    assert "tags: 0" in page.text_content("#room-fields")
    page.fill("#chat-input", "tag, you are it")
    page.press("#chat-input", "Enter")
    page.wait_for_function("document.querySelector('#chat-log').textContent.includes('you are it')",
                           timeout=10_000)
    page.evaluate("window.game.join('echo-1')")
    page.wait_for_function("window.gameState.room === 'echo-1'", timeout=10_000)
    assert page.text_content("#room-fields").startswith("greeting: hello")
    page.evaluate("window.game.connection.send({t: 'say', text: 'raw hello', to_all: true})")
    page.wait_for_function("document.querySelector('#room-log').textContent.includes('raw hello')",
                           timeout=10_000)
    page.evaluate("window.game.connection.send({t: 'move', x: 1, y: 1})")   # not this room's message
    page.wait_for_function("window.gameState.lastError && window.gameState.lastError.code === 'unknown_type'",
                           timeout=10_000)
    browser.screenshot(page, "game-room-type")
    assert browser.errors_of(page) == []


def test_two_pages_see_each_other_move_and_chat(live_server: LiveServer, browser: Browser) -> None:
    alice, bob = browser.new_page(), browser.new_page()
    alice_name, bob_name = unique_name("alice"), unique_name("bob")
    log_in(alice, live_server, alice_name)
    log_in(bob, live_server, bob_name)

    find = "n => Object.values(window.gameState.players).find(p => p.name === n)"
    alice.wait_for_function(f"n => !!({find})(n)", arg=bob_name, timeout=10_000)
    bob.wait_for_function(f"n => !!({find})(n)", arg=alice_name, timeout=10_000)
    alice.wait_for_function("n => document.querySelector('#player-list').dataset.names.includes(n)",
                            arg=bob_name, timeout=5_000)
    # Players of earlier tests may still stand in town (reconnect grace): at least the two of us.
    alice.wait_for_function("Number(document.querySelector('#world').dataset.players) >= 2", timeout=5_000)

    bob_seen = alice.evaluate(f"n => ({find})(n)", bob_name)
    bob.locator("#world").focus()
    hold_key(bob, "ArrowDown", 0.4)
    alice.wait_for_function(f"([n, y]) => ({find})(n).y > y + 40", arg=[bob_name, bob_seen["y"]],
                            timeout=10_000)

    alice_seen = bob.evaluate(f"n => ({find})(n)", alice_name)
    alice.locator("#world").focus()
    hold_key(alice, "KeyA", 0.4)
    bob.wait_for_function(f"([n, x]) => ({find})(n).x < x - 40", arg=[alice_name, alice_seen["x"]],
                          timeout=10_000)

    alice.fill("#chat-input", "hello from alice")
    alice.press("#chat-input", "Enter")
    bob.wait_for_function("document.querySelector('#chat-log').textContent.includes('hello from alice')",
                          timeout=10_000)
    browser.screenshot(alice, "game-two-players")
    assert browser.errors_of(alice) == [] and browser.errors_of(bob) == []


def test_dropped_socket_resumes_the_same_session(live_server: LiveServer, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, live_server, unique_name("resume"))
    page.click("#rooms button[data-room=forest]")
    page.wait_for_function("window.gameState.room === 'forest'", timeout=10_000)
    session = state(page, "session")

    page.evaluate("window.game.connection.ws.close()")
    page.wait_for_function("window.gameState.status !== 'online'", timeout=5_000)
    page.wait_for_function("window.gameState.status === 'online'", timeout=15_000)
    assert state(page, "session") == session
    assert state(page, "room") == "forest"

    # A token the server does not know: resume fails with bad_token, the client logs in again.
    page.evaluate("window.game.connection.token = 'not-a-valid-token'; window.game.connection.ws.close()")
    page.wait_for_function("window.gameState.status !== 'online'", timeout=5_000)
    page.wait_for_function("window.gameState.status === 'online'", timeout=15_000)
    assert state(page, "session") != session
    assert browser.errors_of(page) == []


def test_a_dropped_socket_resumes_with_its_last_seq_and_shows_what_was_missed_once(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.new_page()
    name = unique_name("replay")
    log_in(page, live_server, name)
    page.click("#rooms button[data-room=forest]")
    page.wait_for_function("window.gameState.room === 'forest'", timeout=10_000)
    page.evaluate("window.game.connection.stopped = true")   # reconnect when the test says so

    async def cut_and_talk() -> list[str]:
        """On the server's loop: cut the page's socket (a drop, not a close), then another player says
        three lines while the page is away."""
        server = live_server.server
        session = server.registry.by_name(name)
        assert session is not None and session.link is not None
        session.link.sink.conn.transport.abort()
        for _ in range(200):
            if session.link is None:
                break
            await asyncio.sleep(0.01)
        assert session.link is None
        other = await GameClient.connect(f"ws://127.0.0.1:{server.port}/ws", keepalive=None)
        try:
            await other.login(unique_name("talk")[:16], "browser-test-secret-0123")
            await other.join("forest")
            lines = [f"while away {i} {uuid.uuid4().hex[:6]}" for i in range(3)]
            for line in lines:
                await other.chat(line)
            for line in lines:
                while (await other.expect("chat", timeout=5)).text != line:
                    pass
        finally:
            await other.close()
        return lines

    lines = asyncio.run_coroutine_threadsafe(cut_and_talk(), live_server.loop).result(timeout=30)
    page.wait_for_function("window.game.connection.ws === null", timeout=5_000)   # the page saw the drop
    page.evaluate("(() => { const c = window.game.connection; c.stopped = false; c.attempt = 1; "
                  "c.open().catch(() => {}); })()")
    page.wait_for_function(
        f"document.querySelector('#chat-log').textContent.includes({json.dumps(lines[-1])})", timeout=10_000)
    log = page.text_content("#chat-log") or ""
    assert [log.count(line) for line in lines] == [1, 1, 1]
    counts = page.evaluate("(({replayed, gaps, duplicates, unrecovered}) => "
                           "({replayed, gaps, duplicates, unrecovered}))(window.game.connection)")
    assert counts == {"replayed": 3, "gaps": 0, "duplicates": 0, "unrecovered": 0}
    assert state(page, "status") == "online" and state(page, "room") == "forest"
    assert browser.errors_of(page) == []


def test_second_login_replaces_the_first_page_which_shows_the_bye_reason(
    live_server: LiveServer, browser: Browser
) -> None:
    first, second = browser.new_page(), browser.new_page()
    name = unique_name("twin")
    log_in(first, live_server, name)
    secret = first.evaluate("localStorage.getItem('gamebackend.secret')")
    second.goto(live_server.base_url + "/")
    second.evaluate("s => localStorage.setItem('gamebackend.secret', s)", secret)
    second.reload()
    log_in(second, live_server, name)
    first.wait_for_selector("#login:not([hidden])", timeout=10_000)
    assert first.get_attribute("#status", "data-state") == "closed"
    assert "replaced" in first.text_content("#chat-log")
    assert "replaced" in first.text_content("#login-error")
    assert state(second, "status") == "online"


# ------------------------------------------------------------------------------------- browser, monitor

def test_monitor_shows_the_players_with_the_admin_token(live_server: LiveServer, browser: Browser) -> None:
    players = [browser.new_page(), browser.new_page()]
    for page in players:
        log_in(page, live_server, unique_name("mon"))
    monitor = browser.new_page()
    monitor.goto(f"{live_server.base_url}/monitor?token={ADMIN_TOKEN}")
    monitor.wait_for_function("window.monitorState && window.monitorState.sessions >= 2", timeout=10_000)
    monitor.wait_for_function(
        "Number(document.querySelector('#rooms-table tr[data-room=town]')?.dataset.players) >= 2",
        timeout=10_000,
    )
    assert "token=" not in monitor.url  # the token left the address bar
    stats = monitor.evaluate("window.monitorState")
    assert {r["name"] for r in stats["rooms"]} == {"town", "forest", "dungeon", "tag", "echo-1"}
    for step in range(8):  # a few seconds of traffic for the message and tick charts
        page = players[step % 2]
        page.locator("#world").focus()
        hold_key(page, ["KeyD", "KeyS", "KeyA", "KeyW"][step // 2 % 4], 0.5)
    monitor.wait_for_function("window.monitorState.messages_in_per_s > 0", timeout=10_000)
    monitor.wait_for_function("document.querySelector('#m-health').textContent !== '\\u2013'", timeout=10_000)
    assert int(monitor.text_content("#m-sessions")) >= 2
    browser.screenshot(monitor, "monitor", docs=True)
    assert browser.errors_of(monitor) == []


def test_monitor_refuses_a_wrong_token_with_a_clear_message(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.new_page()
    page.goto(f"{live_server.base_url}/monitor?token=wrong-token")
    page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
    page.wait_for_function("document.querySelector('#token-error').textContent.startsWith('Unauthorized')",
                           timeout=10_000)
    assert page.is_hidden("#monitor")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#token-form button")
    page.wait_for_function("window.monitorState && Array.isArray(window.monitorState.rooms)", timeout=10_000)


def test_stats_endpoint_answers_401_without_the_token(live_server: LiveServer) -> None:
    status, content_type, body = live_server.get("/api/stats")
    assert status == 401 and content_type.startswith("application/json")
    status, _, body = live_server.get(f"/api/stats?token={ADMIN_TOKEN}")
    assert status == 200 and "rooms" in json.loads(body)


# ------------------------------------------------------------------------------------- webui, no browser

@pytest.mark.parametrize(("path", "name", "kind"), [
    ("/", "index.html", "text/html"),
    ("/index.html", "index.html", "text/html"),
    ("/monitor", "monitor.html", "text/html"),
    ("/monitor?token=x", "monitor.html", "text/html"),
    ("/static/game.js", "game.js", "text/javascript"),
    ("/static/style.css", "style.css", "text/css"),
])
def test_static_response_serves_pages_and_modules(path: str, name: str, kind: str) -> None:
    response = webui.static_response(path)
    assert response is not None
    status, content_type, body = response
    assert status == 200 and content_type.startswith(kind)
    assert body == (webui.STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize("path", [
    "/static/../webui.py", "/static/..%2Fwebui.py", "/static/%2e%2e/app.py", "/static/.hidden.js",
    "/static/sub/game.js", "/static/", "/static/missing.js", "/static/%00.js", "/static/game.js%2F",
])
def test_static_response_refuses_traversal_and_unknown_files(path: str) -> None:
    assert webui.static_response(path) == (404, "text/plain; charset=utf-8", b"not found\n")


def test_static_response_leaves_other_paths_to_the_transport() -> None:
    for path in ("/ws", "/health", "/metrics", "/favicon.ico", "/api/stats"):
        assert webui.static_response(path) is None


def test_static_response_refuses_files_of_unknown_type(tmp_path: Any) -> None:
    (tmp_path / "secret.py").write_text("x = 1")
    assert webui.static_response("/static/secret.py", tmp_path)[0] == 404


def test_check_admin_token() -> None:
    assert webui.check_admin_token("s3cret-token", "s3cret-token")
    assert not webui.check_admin_token("s3cret-tokeN", "s3cret-token")
    assert not webui.check_admin_token(None, "s3cret-token")
    assert not webui.check_admin_token("", "")
    assert not webui.check_admin_token("anything", None)
    assert webui.check_admin_token("é-unicode", "é-unicode")


def _source() -> webui.StatsSource:
    from gameserver.game import Room, RoomSpec, Rules
    from gameserver.metrics import Metrics

    metrics = Metrics()
    room = Room(RoomSpec("town", 100.0, 100.0), Rules())
    room.add_player("ann", 10, 10, 0.0)
    metrics.sessions.set(1)
    metrics.msg_in("move").inc(5)
    metrics.tick_duration.labels("town").observe(0.002)
    metrics.tick_lag.labels("town").set(0.0005)
    metrics.cas_retries.inc(2)
    return webui.StatsSource(
        metrics.registry, time.monotonic() - 10,
        lambda: [("town", {"players": len(room), "mobs_alive": room.mobs_alive()})], lambda: 1)


def test_stats_snapshot_has_the_shape_the_monitor_reads() -> None:
    snap = webui.stats_snapshot(_source())
    json.dumps(snap)
    assert snap["sessions"] == 1 and snap["players"] == 1
    assert snap["rooms"] == [
        {"name": "town", "players": 1, "mobs_alive": 0, "tick_ms": 2.0, "tick_lag_ms": 0.5},
    ]
    assert snap["messages_in_total"] == 5 and snap["messages_in_per_s"] is not None
    assert set(snap["datastore"]) == {"ops_per_s", "ops_total", "cas_retries", "cas_retries_per_s"}
    assert snap["datastore"]["cas_retries"] == 2
    assert 9 <= snap["uptime_s"] <= 60


def test_stats_snapshot_survives_an_empty_source() -> None:
    snap = webui.stats_snapshot(webui.StatsSource())
    assert snap["rooms"] == [] and snap["sessions"] is None and snap["messages_in_per_s"] is None


def test_http_response_guards_the_stats_with_the_admin_token() -> None:
    pages = webui.WebUI(_source(), admin_token="tok")
    assert pages("/api/stats")[0] == 401
    assert pages("/api/stats", {"Authorization": "Bearer nope"})[0] == 401
    assert pages("/api/stats", {"Authorization": "Bearer tok"})[0] == 200
    assert pages("/api/stats?token=tok")[0] == 200
    assert webui.WebUI(_source(), admin_token=None)("/api/stats?token=tok")[0] == 403
    assert pages("/monitor")[0] == 200
    assert pages("/ws") is None
