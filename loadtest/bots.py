"""Demo bot players: real clients on `shared.client.GameClient` that wander, hunt mobs, chat and ping.

    gamebots --url ws://127.0.0.1:8765/ws --players 50 --duration 60 --room forest --seed 1

Bot `i` is named `bot0001`, `bot0002`, ... with a secret derived from its name (HMAC of a fixed base
secret), so reruns log back into the same characters. All decisions of bot `i` come from
`random.Random(f"{seed}:{i}")`. Every loop ends at the deadline or when `stop_event` is set.

Drops: the client resumes by itself with its last `seq` (the server replays what the session missed);
the bot resumes (or logs in again) only when the client gave up. Replayed messages and resumes answered
`recovered: false` are counted; a gap without that announcement, or a message seen twice, is an error.

In-process use (demo, tests): `report = await run_bots(url, players, duration, room, seed)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from shared.client import ConnectionLost, GameClient, ServerError
from shared.messages import room_kind
from shared.retry import refusal_delay

log = logging.getLogger("loadtest.bots")

BOT_BASE_SECRET = b"gamebackend-demo-bots-v1"
NORMAL_ATTACK_ERRORS = frozenset({"out_of_range", "cooldown", "no_such_mob"})
REQUEST_TIMEOUT = 10.0
ATTACK_RANGE = 64.0
ATTACK_EVERY = 0.3  # a little over the default 250 ms cooldown
SPEED = 300.0
MOVE_HZ = 5.0
MAX_RTTS = 2000  # per bot, recent ones only
MAX_ERRORS = 50


def bot_name(index: int) -> str:
    """Stable name of bot `index` (0-based): bot0001, bot0002, ..."""
    return f"bot{index + 1:04d}"


def bot_secret(name: str, base: bytes = BOT_BASE_SECRET) -> str:
    """Per-bot secret, independent of the seed so reruns with any seed reuse characters (32 chars)."""
    return hmac.new(base, name.encode(), hashlib.sha256).hexdigest()[:32]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[k]


@dataclass
class BotStats:
    """Counters of one bot, updated only by that bot's tasks."""

    name: str
    online: bool = False
    logged_in: bool = False
    logins: int = 0
    resumes: int = 0
    relogins: int = 0
    drops: int = 0
    refused: int = 0  # logins the server turned away (busy / server_full) that the bot waited out
    replayed: int = 0
    unrecovered: int = 0
    sent: int = 0
    received: int = 0
    attacks: int = 0
    hits: int = 0
    kills: int = 0
    xp_gained: int = 0
    chats: int = 0
    rtts: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_RTTS))
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)


@dataclass
class BotReport:
    """What a bot run did; `ok` is False when any bot hit an unexpected error."""

    players: int
    seconds: float
    logged_in: int
    messages_in: int
    messages_out: int
    attacks: int
    hits: int
    kills: int
    xp_gained: int
    chats: int
    pings: int
    rtt_p50_ms: float
    rtt_p99_ms: float
    resumes: int
    relogins: int
    drops: int
    refused: int
    errors: list[str]
    replayed: int = 0
    unrecovered: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @classmethod
    def collect(cls, stats: list[BotStats], seconds: float) -> BotReport:
        rtts = [r for s in stats for r in s.rtts]
        return cls(
            players=len(stats),
            seconds=seconds,
            logged_in=sum(s.logged_in for s in stats),
            messages_in=sum(s.received for s in stats),
            messages_out=sum(s.sent for s in stats),
            attacks=sum(s.attacks for s in stats),
            hits=sum(s.hits for s in stats),
            kills=sum(s.kills for s in stats),
            xp_gained=sum(s.xp_gained for s in stats),
            chats=sum(s.chats for s in stats),
            pings=len(rtts),
            rtt_p50_ms=percentile(rtts, 50) * 1000,
            rtt_p99_ms=percentile(rtts, 99) * 1000,
            resumes=sum(s.resumes for s in stats),
            relogins=sum(s.relogins for s in stats),
            drops=sum(s.drops for s in stats),
            refused=sum(s.refused for s in stats),
            errors=[f"{s.name}: {e}" for s in stats for e in s.errors],
            replayed=sum(s.replayed for s in stats),
            unrecovered=sum(s.unrecovered for s in stats),
        )

    def format(self) -> str:
        secs = max(self.seconds, 1e-9)
        lines = [
            f"bots: {self.players} ({self.logged_in} logged in) for {self.seconds:.1f}s",
            f"messages: {self.messages_in} in ({self.messages_in / secs:.0f}/s), "
            f"{self.messages_out} out ({self.messages_out / secs:.0f}/s)",
            f"combat: {self.attacks} attacks, {self.hits} hits, {self.kills} kills, "
            f"{self.xp_gained} xp gained",
            f"chat: {self.chats} sent; ping: {self.pings} rtt p50 {self.rtt_p50_ms:.1f} ms "
            f"p99 {self.rtt_p99_ms:.1f} ms",
            f"reconnects: {self.drops} drops, {self.resumes} resumed, {self.relogins} re-logins; "
            f"{self.replayed} messages replayed, {self.unrecovered} resumes unrecovered",
            f"logins refused (busy / server_full, waited out): {self.refused}",
            f"unexpected errors: {len(self.errors)}",
        ]
        lines += [f"  {e}" for e in self.errors[:20]]
        return "\n".join(lines)


# -------------------------------------------------------------------------------- world access helpers


def world_mobs(client: GameClient) -> list[tuple[int, float, float, float]]:
    """[(id, x, y, hp)] of the mobs in the client's room (`World.mobs`: id -> [kind, x, y, hp])."""
    return [(mid, float(m[1]), float(m[2]), float(m[3])) for mid, m in client.world.mobs.items()]


def world_bounds(client: GameClient) -> tuple[float, float]:
    bounds = client.world.bounds
    return (float(bounds[0]), float(bounds[1])) if bounds else (1000.0, 1000.0)


# -------------------------------------------------------------------------------------------- one bot


@dataclass
class BotConfig:
    url: str
    room: str
    seed: int
    deadline: float  # time.monotonic() at which every loop ends
    move_hz: float = MOVE_HZ
    ping_every: float = 2.0
    chat_every: tuple[float, float] = (15.0, 45.0)


class Bot:
    """One bot: connect, login, join, then play until the deadline or `stop`; resume after drops."""

    def __init__(self, index: int, cfg: BotConfig, stop: asyncio.Event) -> None:
        self.index = index
        self.cfg = cfg
        self.stop = stop
        self.name = bot_name(index)
        self.secret = bot_secret(self.name)
        self.rng = random.Random(f"{cfg.seed}:{index}")
        self.stats = BotStats(self.name)
        self.client: GameClient | None = None
        self.target: tuple[float, float] | None = None
        self.pos = (0.0, 0.0)
        self.dead_until: dict[int, float] = {}

    def done(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.cfg.deadline

    async def run(self) -> None:
        """Play until done; after a drop, resume (or log in again) with bounded, jittered backoff."""
        backoff = 0.5
        refusals = 0
        try:
            while not self.done():
                try:
                    await self._enter()
                    backoff = 0.5
                    refusals = 0
                    await self._play()
                except (TimeoutError, ConnectionError, OSError, ConnectionClosed, InvalidHandshake) as exc:
                    if self.done():
                        break
                    self.stats.online = False
                    if self.client is not None and not self.client.closed:
                        continue  # the client is resuming by itself (it counts that drop)
                    self.stats.drops += 1
                    log.debug("%s: connection lost (%r), reconnecting", self.name, exc)
                    await self._sleep(backoff * (0.5 + self.rng.random()))
                    backoff = min(backoff * 2, 5.0)
                except ServerError as exc:
                    delay = refusal_delay(exc.code, exc.retry_after, refusals, self.rng)
                    if delay is None:
                        self.stats.error(f"{exc.code}: {exc.message}")
                        delay = 2.0
                    else:   # the server is full or busy: an answer, not a failure; come back later
                        refusals += 1
                        self.stats.refused += 1
                    await self._sleep(delay)
        except Exception as exc:  # a bug in the bot: report it, never hang the run
            self.stats.error(f"{type(exc).__name__}: {exc}")
        finally:
            self.stats.online = False
            await self._close()

    async def _sleep(self, seconds: float) -> None:
        seconds = max(0.0, min(seconds, self.cfg.deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 3.0)
            self._count_seq(client)

    def _count_seq(self, client: GameClient) -> None:
        """Fold the client's own resumes and seq checks into the bot's stats (once per client)."""
        s, seq = self.stats, client.seq
        s.drops += client.drops
        s.resumes += client.resumes
        s.replayed += seq.replayed
        s.unrecovered += seq.unrecovered
        if seq.failures:
            s.error(f"seq: {seq.summary()}")

    async def _call(self, coro: Any) -> Any:
        """Await one request (the client bounds it by its timeout), counting it both ways."""
        self.stats.sent += 1
        reply = await coro
        self.stats.received += 1
        return reply

    async def _enter(self) -> None:
        """Get into the room: first a fresh connection and login; after a drop `reconnect()` (resume),
        and a new login on that socket when the token is no longer valid."""
        client = self.client
        if client is None or client.token is None:
            if client is not None:
                await self._close()
            left = max(0.0, min(30.0, self.cfg.deadline - time.monotonic()))
            client = await GameClient.connect(self.cfg.url, binary=True, timeout=REQUEST_TIMEOUT,
                                              retry_refused=left)   # waits out busy / server_full
            self.client = client
            await self._login(client)
        elif client.closed:
            self.stats.sent += 1
            try:
                await client.reconnect()
                self.stats.received += 2  # welcome + joined
                self.stats.resumes += 1
            except ServerError as exc:
                self.stats.received += 1
                if exc.code != "bad_token":
                    raise
                self.stats.relogins += 1
                await self._login(client)
        here = client.world.room or ""
        if self.cfg.room not in (here, room_kind(here)):   # in it, or in one of its instances
            await self._call(client.join(self.cfg.room))
        pos = client.world.position
        if pos is not None:
            self.pos = (float(pos[0]), float(pos[1]))
        self.stats.online = True

    async def _login(self, client: GameClient) -> None:
        try:
            await self._call(client.login(self.name, self.secret))
        finally:
            self.stats.refused += client.refusals   # refusals the client waited out on its own
            client.refusals = 0
        self.stats.received += 1  # the joined after welcome
        self.stats.logins += 1
        self.stats.logged_in = True

    async def _play(self) -> None:
        client = self.client
        assert client is not None
        reader = asyncio.create_task(self._read(client))
        try:
            now = time.monotonic()
            next_ping = now + self.rng.uniform(0, self.cfg.ping_every)
            next_chat = now + self.rng.uniform(*self.cfg.chat_every)
            next_attack = now
            last_move = now
            period = 1.0 / self.cfg.move_hz
            next_step = now
            while not self.done():
                if reader.done():
                    raise ConnectionLost("connection ended")
                now = time.monotonic()
                if now >= next_ping:
                    next_ping = now + self.cfg.ping_every
                    rtt = await self._call(client.ping())
                    self.stats.rtts.append(rtt)
                if now >= next_chat:
                    next_chat = now + self.rng.uniform(*self.cfg.chat_every)
                    self.stats.sent += 1
                    self.stats.chats += 1
                    await client.chat(self.rng.choice(CHAT_LINES))
                mob = self._pick_mob(client, now)
                if mob is not None and now >= next_attack:
                    mid, mx, my = mob
                    if math.hypot(mx - self.pos[0], my - self.pos[1]) <= ATTACK_RANGE - 10:
                        next_attack = now + ATTACK_EVERY
                        await self._attack(client, mid, now)
                target = (mob[1], mob[2]) if mob is not None else self._wander_target(client)
                dt = min(1.0, now - last_move)
                last_move = now
                await self._move_toward(client, target, dt)
                next_step += period
                delay = next_step - time.monotonic()
                if delay < -period:  # fell behind (slow server): skip, do not burst
                    next_step = time.monotonic()
                await self._sleep(max(0.0, delay))
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read(self, client: GameClient) -> None:
        """Consume every server message without rid: count them, track XP; errors and byes are noted."""
        async for msg in client:
            self.stats.received += 1
            t = msg.t
            if t == "xp":
                self.stats.xp_gained += int(msg.gained)
            elif t == "error":  # an error for a fire-and-forget move/chat: bots must not cause those
                self.stats.error(f"error {msg.code}: {msg.message}")
            elif t == "bye":
                if msg.reason != "shutdown" or not self.done():
                    log.info("%s: bye %s", self.name, msg.reason)
                if msg.reason not in ("shutdown", "idle"):
                    self.stats.error(f"bye {msg.reason}")
                return

    def _pick_mob(self, client: GameClient, now: float) -> tuple[int, float, float] | None:
        """Nearest live mob within 400 units, else None."""
        best, best_d = None, 400.0
        for mid, x, y, hp in world_mobs(client):
            if hp <= 0 or self.dead_until.get(mid, 0.0) > now:
                continue
            d = math.hypot(x - self.pos[0], y - self.pos[1])
            if d < best_d:
                best, best_d = (mid, x, y), d
        return best

    def _wander_target(self, client: GameClient) -> tuple[float, float]:
        w, h = world_bounds(client)
        if self.target is None or math.hypot(self.target[0] - self.pos[0], self.target[1] - self.pos[1]) < 25:
            self.target = (self.rng.uniform(0, w), self.rng.uniform(0, h))
        return self.target

    async def _move_toward(self, client: GameClient, target: tuple[float, float], dt: float) -> None:
        x, y = self.pos
        dx, dy = target[0] - x, target[1] - y
        dist = math.hypot(dx, dy)
        if dist < 20.0:  # close enough (mobs: stay in range without stacking)
            return
        step = SPEED * max(dt, 0.05) * 0.9
        if dist > step:
            dx, dy = dx * step / dist, dy * step / dist
        w, h = world_bounds(client)
        self.pos = (min(max(x + dx, 0.0), w), min(max(y + dy, 0.0), h))
        self.stats.sent += 1
        await client.move(round(self.pos[0], 1), round(self.pos[1], 1))

    async def _attack(self, client: GameClient, mob_id: int, now: float) -> None:
        self.stats.attacks += 1
        try:
            hit = await self._call(client.attack(mob_id))
        except ServerError as exc:
            self.stats.received += 1
            if exc.code not in NORMAL_ATTACK_ERRORS:
                raise
            if exc.code == "no_such_mob":
                self.dead_until[mob_id] = now + 2.0
            return
        self.stats.hits += 1
        if hit.hp <= 0:
            self.stats.kills += 1
            self.dead_until[mob_id] = now + 3.0


CHAT_LINES = (
    "hello there", "anyone seen the wolves?", "gg", "this forest is busy", "brb",
    "nice hit!", "lvl up soon", "where is the dungeon?", "o/", "let's group up",
)


# ---------------------------------------------------------------------------------------------- runs


async def run_bots(
    url: str,
    players: int,
    duration: float,
    room: str = "forest",
    seed: int = 1,
    *,
    ramp: float = 0.0,
    stop_event: asyncio.Event | None = None,
    first_index: int = 0,
    on_summary: Callable[[str], None] | None = None,
    summary_every: float = 2.0,
) -> BotReport:
    """Run `players` bots against `url` for `duration` seconds (0 = until `stop_event`) and report.

    Bots start spread over `ramp` seconds. `on_summary` gets a one-line live summary every
    `summary_every` seconds. Returns after every bot task has ended (each ends by the deadline/stop).
    """
    stop = stop_event or asyncio.Event()
    start = time.monotonic()
    deadline = start + duration if duration > 0 else start + 10 * 365 * 86400.0
    cfg = BotConfig(url=url, room=room, seed=seed, deadline=deadline)
    bots = [Bot(first_index + i, cfg, stop) for i in range(players)]

    async def start_bot(i: int, bot: Bot) -> None:
        if ramp > 0 and players > 1:
            await bot._sleep(ramp * i / players)
        if not bot.done():
            await bot.run()
            if not bot.stats.logged_in:
                bot.stats.error("never logged in")

    tasks = [asyncio.create_task(start_bot(i, b), name=b.name) for i, b in enumerate(bots)]
    reporter = asyncio.create_task(_live_summary(bots, start, stop, deadline, on_summary, summary_every))
    try:
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reporter.cancel()
        with contextlib.suppress(BaseException):
            await reporter
    return BotReport.collect([b.stats for b in bots], time.monotonic() - start)


async def _live_summary(
    bots: list[Bot],
    start: float,
    stop: asyncio.Event,
    deadline: float,
    on_summary: Callable[[str], None] | None,
    every: float,
) -> None:
    if on_summary is None:
        return
    last_in = last_out = 0
    last_t = start
    while not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        now = time.monotonic()
        stats = [b.stats for b in bots]
        total_in = sum(s.received for s in stats)
        total_out = sum(s.sent for s in stats)
        dt = max(now - last_t, 1e-9)
        rtts = [r for s in stats for r in list(s.rtts)[-20:]]
        on_summary(
            f"[{now - start:6.1f}s] online {sum(s.online for s in stats)}/{len(stats)} | "
            f"msgs/s in {(total_in - last_in) / dt:.0f} out {(total_out - last_out) / dt:.0f} | "
            f"kills {sum(s.kills for s in stats)} xp {sum(s.xp_gained for s in stats)} | "
            f"ping p50 {percentile(rtts, 50) * 1000:.1f} ms p99 {percentile(rtts, 99) * 1000:.1f} ms | "
            f"errors {sum(len(s.errors) for s in stats)}"
        )
        last_in, last_out, last_t = total_in, total_out, now


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gamebots", description="Run demo bot players against a game server.")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws", help="websocket url of the server")
    p.add_argument("--players", type=int, default=10, help="number of bots")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (0 = until Ctrl-C)")
    p.add_argument("--room", default="forest", help="room every bot joins")
    p.add_argument("--seed", type=int, default=1, help="seed of the bots' decisions")
    p.add_argument("--ramp", type=float, default=0.0, help="seconds over which bots start")
    p.add_argument("--first", type=int, default=0, help="index of the first bot (to run disjoint crowds)")
    p.add_argument("--quiet", action="store_true", help="no live summary")
    return p


async def _main_async(args: argparse.Namespace) -> BotReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return await run_bots(
        args.url, args.players, args.duration, args.room, args.seed, ramp=args.ramp, stop_event=stop,
        first_index=args.first, on_summary=None if args.quiet else (lambda line: print(line, flush=True)),
    )


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`gamebots`); exit code 0 only if no bot hit an unexpected error."""
    args = build_parser().parse_args(argv)
    if args.players < 1:
        print("--players must be >= 1", file=sys.stderr)
        return 2
    report = asyncio.run(_main_async(args))
    print(report.format(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
