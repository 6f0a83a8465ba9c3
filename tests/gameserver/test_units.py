"""Unit tests of the small pieces: config, tokens, auth, rate limit, out queue, leaderboard, link writer."""

from __future__ import annotations

import asyncio

import pytest

from gameserver.auth import hash_secret, verify_secret
from gameserver.config import ConfigError, LimitsConfig, load_config
from gameserver.leaderboard import Leaderboard
from gameserver.metrics import Metrics
from gameserver.outqueue import OutQueue, QueueOverflow
from gameserver.ratelimit import TokenBucket, Verdict
from gameserver.session import Link
from gameserver.tokens import BadToken, TokenSigner


def test_config_precedence_defaults_toml_env_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('port = 9000\nlog_level = "DEBUG"\n[game]\ntick_rate = 30\n'
                    '[[rooms]]\nname = "town"\n[[rooms]]\nname = "cave"\nmob_count = 4\n')
    env = {"GAMESERVER_PORT": "9100", "GAMESERVER_LIMITS__RATE_PER_SEC": "50", "GAMESERVER_DATA": "/tmp/x"}
    cfg = load_config(toml, environ=env, overrides={"port": 9200})
    assert cfg.port == 9200 and cfg.game.tick_rate == 30 and cfg.limits.rate_per_sec == 50
    assert cfg.log_level == "DEBUG" and cfg.store.resolved_url().startswith("file:///tmp/x?durability=fsync")
    assert [s.name for s in cfg.room_specs()] == ["town", "cave"] and len(cfg.room_specs()[1].mobs) == 4
    assert load_config(environ={}).limits == LimitsConfig()
    assert [s.name for s in load_config(environ={}).room_specs()] == ["town", "forest", "dungeon"]


@pytest.mark.parametrize("env", [
    {"GAMESERVER_PORT": "70000"},
    {"GAMESERVER_GAME__START_ROOM": "nowhere"},
    {"GAMESERVER_AUTH__SCRYPT_N": "1000"},
    {"GAMESERVER_ROOMS": '[{"name": "a", "mobs": [{"id": 1, "x": 1, "y": 1, "hp": 5000}]}]',
     "GAMESERVER_GAME__START_ROOM": "a"},                  # a mob that cannot die within 20 hits
    {"GAMESERVER_LIMITS__BOGUS": "1"},
])
def test_invalid_config_is_a_clear_error(env):
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_config(environ=env)


def test_tokens_roundtrip_forgery_and_expiry():
    signer = TokenSigner("k" * 32, ttl=10)
    token = signer.issue("sess", "bob", now=100.0)
    claims = signer.verify(token, now=105.0)
    assert (claims.session, claims.name) == ("sess", "bob")
    with pytest.raises(BadToken, match="expired"):
        signer.verify(token, now=111.0)
    with pytest.raises(BadToken):
        TokenSigner("other" * 8, ttl=10).verify(token, now=100.0)
    body, sig = token.split(".")
    with pytest.raises(BadToken):
        signer.verify(body[:-2] + "xx." + sig, now=100.0)
    assert TokenSigner(None, 5).ephemeral


def test_scrypt_hash_is_salted_and_verifies():
    a, b = hash_secret("secret-secret-123", n=16), hash_secret("secret-secret-123", n=16)
    assert a != b and verify_secret("secret-secret-123", a) and not verify_secret("nope-nope-nope-12", a)
    assert not verify_secret("x", "garbage")


def test_token_bucket_burst_notify_once_per_second_and_kick():
    bucket = TokenBucket(rate=10, burst=5, now=0.0, kick_after=3.0)
    assert [bucket.check(0.0) for _ in range(5)] == [Verdict.ALLOW] * 5
    assert bucket.check(0.0) is Verdict.DROP_NOTIFY
    assert bucket.check(0.01) is Verdict.DROP
    assert bucket.check(0.2) is Verdict.ALLOW             # refilled 2 tokens
    verdicts = [bucket.check(t / 100) for t in range(21, 400)]   # 100/s against 10/s
    assert verdicts.count(Verdict.DROP_NOTIFY) <= 4 and verdicts[-1] is Verdict.KICK
    calm = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(calm.check(t / 10) is Verdict.ALLOW for t in range(100))


def test_outqueue_coalesces_ticks_and_bounds_reliable():
    q = OutQueue(max_reliable=2)
    q.push_tick({"moved": [[1, 1.0, 1.0], [2, 2.0, 2.0]], "mobs": [[5, 10]]}, 1, 1.0)
    q.push_tick({"moved": [[1, 3.0, 3.0]], "joined": [[3, "c", 0.0, 0.0]], "left": [2]}, 2, 2.0)
    q.push_tick({"moved": [[3, 4.0, 4.0]], "mobs": [[5, 0]], "left": [4],
                 "joined": [[4, "d", 1.0, 1.0]]}, 3, 3.0)
    q.push_reliable(b"chat")
    assert q.pop() == b"chat"
    tick = q.pop()
    assert tick["n"] == 3 and tick["ts"] == 3.0
    assert tick["moved"] == [[1, 3.0, 3.0]]
    assert tick["joined"] == [[3, "c", 4.0, 4.0], [4, "d", 1.0, 1.0]]   # joined carries the latest place
    assert tick["left"] == [2]             # 4 left then re-joined within the window: joined only
    assert tick["mobs"] == [[5, 0]]
    assert q.pop() is None
    q.push_reliable(b"a")
    q.push_reliable(b"b")
    with pytest.raises(QueueOverflow):
        q.push_reliable(b"c")


def test_leaderboard_order_and_updates():
    lb = Leaderboard()
    for name, xp in [("bob", 50), ("amy", 50), ("cat", 10), ("dan", 99)]:
        lb.update(name, xp, 1)
    assert [e["name"] for e in lb.top(10)] == ["dan", "amy", "bob", "cat"]
    lb.update("cat", 500, 3)
    assert lb.top(1) == [{"name": "cat", "level": 3, "xp": 500}] and len(lb) == 4 and lb.rank_of("dan") == 2


class FakeSink:
    def __init__(self) -> None:
        self.sent: list = []
        self.backed = False
        self.closed: tuple | None = None
        self.drained = asyncio.Event()

    def send(self, frame):
        self.sent.append(frame)

    def send_wire(self, wire):
        self.sent.append(wire)

    def backed_up(self):
        return self.backed

    def write_now(self, wire):
        if self.backed_up():
            return False
        self.send_wire(wire)
        return True

    async def drain(self):
        await self.drained.wait()

    def close(self, code, reason):
        self.closed = (code, reason)

    @property
    def is_open(self):
        return self.closed is None


async def test_link_queues_while_backed_up_and_writer_sends_merged_tick():
    sink = FakeSink()
    link = Link(sink, LimitsConfig(reliable_queue=8), Metrics(), 0.0)
    link.binary = False
    link.send({"t": "pong", "ts": 1.0})
    assert len(sink.sent) == 1                       # direct write path
    sink.backed = True
    assert not link.direct_ok
    link.send({"t": "chat", "from": "amy", "text": "hi", "ts": 1.0})
    for n in range(1, 6):
        link.queue_tick({"moved": [[1, float(n), 0.0]]}, n, float(n))
    assert len(sink.sent) == 1 and len(link.out) == 2
    sink.backed = False
    sink.drained.set()
    await asyncio.sleep(0.01)
    assert sink.sent[1].startswith('{"t":"chat"')
    assert '"n":5' in sink.sent[2] and '"moved":[[1,5.0,0.0]]' in sink.sent[2]
    assert len(sink.sent) == 3                       # five ticks became one


async def test_link_reliable_overflow_closes_with_1008():
    sink = FakeSink()
    sink.backed = True
    link = Link(sink, LimitsConfig(reliable_queue=8), Metrics(), 0.0)
    for i in range(9):
        link.send({"t": "pong", "ts": float(i)})
    assert sink.closed == (1008, "reliable_overflow") and link.closing
