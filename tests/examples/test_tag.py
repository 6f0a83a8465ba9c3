"""The second game (examples/tag): started with `gameserver serve --config examples/tag/server.toml`, played
by real websocket clients, restarted to check that what `player.data` holds survives."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.procs import free_port, stop_process, wait_healthy
from shared.client import GameClient, ServerError

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples" / "tag" / "server.toml"
SECRET = "tag-secret-0123456789"


class Server:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # run from elsewhere than the repo: the room type is found through the config file's directory
        argv = [sys.executable, "-m", "gameserver.cli", "serve", "--config", str(CONFIG),
                "--port", str(self.port), "--data", str(self.data)]
        self.proc = subprocess.Popen(argv, cwd=self.data.parent, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_healthy(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.stop()


async def chase(it: GameClient, target: tuple[float, float], seconds: float = 5.0) -> None:
    """Walk ``it`` onto ``target`` (the speed limit makes this take a few moves)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        await it.move(*target)
        await asyncio.sleep(0.1)
        pos = it.world.position
        if pos is not None and abs(pos[0] - target[0]) < 1 and abs(pos[1] - target[1]) < 1:
            return
    raise AssertionError(f"never reached {target}: at {it.world.position}")


async def test_tag_is_played_through_real_clients_and_tags_survive_a_restart(server: Server) -> None:
    amy = await GameClient.connect(server.url, timeout=5.0)
    bob = await GameClient.connect(server.url, timeout=5.0)
    try:
        assert (await amy.login("amy", SECRET)).character.room == "lobby"
        await bob.login("bob", SECRET)
        joined_a = await amy.join("tag")
        joined_b = await bob.join("tag")
        assert joined_a.it == joined_a.you and joined_b.it == joined_a.you     # first in is it
        assert joined_a.tags == 0 and joined_a.bounds == (400.0, 400.0)
        assert {p[1] for p in joined_b.players} == {"amy", "bob"}

        with pytest.raises(ServerError) as err:
            await bob.request("tag", target=joined_a.you)                       # bob is not it
        assert err.value.code == "not_it"
        with pytest.raises(ServerError) as err:
            await amy.request("tag", target="bob")
        assert err.value.code == "bad_message" and "target" in err.value.message
        far = bob.world.position
        assert far is not None
        # bob stands still; amy runs to him
        await chase(amy, far)
        done = await amy.request("tag", target=joined_b.you)
        assert (done.t, done.it, done.tags) == ("tag_ok", joined_b.you, 1)
        tagged = await bob.expect("tagged", timeout=5.0)
        assert (tagged.by, tagged.it) == (joined_a.you, joined_b.you)
        xp = await amy.expect("xp", timeout=5.0)
        assert (xp.gained, xp.reason) == (10, "tag:bob")
        with pytest.raises(ServerError) as err:
            await bob.request("tag", target=joined_a.you)                       # no tag-backs at once
        assert err.value.code == "no_tag_backs"
    finally:
        await amy.close()
        await bob.close()

    server.stop()                                                               # clean stop: data saved
    server.start()
    amy = await GameClient.connect(server.url, timeout=5.0)
    try:
        await amy.login("amy", SECRET)
        assert (await amy.join("tag")).tags == 1
        assert (await amy.me()).character.xp == 10
    finally:
        await amy.close()
