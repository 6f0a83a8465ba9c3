"""Bare baseline server for the benchmarks: ``websockets`` (asyncio) on uvloop, the work floor of a game tick.

    python -m loadtest.bare_server --port 23456 [--tick-rate 20]

Speaks the protocol subset the benchmark generator uses: ``login`` (no hashing, no store), ``join``,
``move`` (applied as sent: no speed limit, no validation), ``ping``. Rooms ``town`` and ``forest`` (1000 x
1000), the same 250-unit grid area of interest as the game server (own cell + 8 neighbours), a 20 Hz
deadline tick. Per tick, the players who stayed in their cell share ONE msgpack body per cell (moved /
joined / left of its neighbourhood), handed to ``websockets.broadcast``; a player who changed cell gets a
personal body that also carries the players of the cells newly in view and the ids of those out of view.
Tick bodies use the game server's key order (``t, n, ts, moved, joined, left``) and omit empty lists.

What it leaves out is what the real server pays for on top: validation, rate limits, per-session queues
and flow control, persistence, secret hashing, mobs and combat. The benchmark prints ours / this.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from typing import Any

import msgpack
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

CELL = 250.0
SIDE = 1000.0


class Player:
    __slots__ = ("cell", "name", "pid", "room", "ws", "x", "y")

    def __init__(self, pid: int, name: str, ws: ServerConnection) -> None:
        self.pid = pid
        self.name = name
        self.ws = ws
        self.room: BareRoom | None = None
        self.x = self.y = 0.0
        self.cell = 0


class BareRoom:
    """Players on a grid; records what changed and turns it into per-cell tick bodies."""

    def __init__(self, name: str, side: float = SIDE, cell: float = CELL) -> None:
        self.name = name
        self.side = side
        self.cell = cell
        self.cols = max(1, int(-(-side // cell)))
        self.players: dict[int, Player] = {}
        self.members: dict[int, set[int]] = {}
        self._near: dict[int, tuple[int, ...]] = {}
        self.moved: set[int] = set()
        self.prev: dict[int, int | None] = {}  # pid -> cell at the last tick (None: joined since)
        self.gone: dict[int, int] = {}  # pid -> cell at the last tick, for players who left

    def near(self, cell: int) -> tuple[int, ...]:
        found = self._near.get(cell)
        if found is None:
            row, col = divmod(cell, self.cols)
            found = self._near[cell] = tuple(
                r * self.cols + c for r in range(max(0, row - 1), min(self.cols, row + 2))
                for c in range(max(0, col - 1), min(self.cols, col + 2)))
        return found

    def cell_of(self, x: float, y: float) -> int:
        last = self.cols - 1
        return min(last, max(0, int(y // self.cell))) * self.cols + min(last, max(0, int(x // self.cell)))

    def add(self, p: Player, x: float, y: float) -> None:
        p.room, p.x, p.y = self, x, y
        p.cell = self.cell_of(x, y)
        self.players[p.pid] = p
        self.members.setdefault(p.cell, set()).add(p.pid)
        self.prev[p.pid] = None

    def remove(self, p: Player) -> None:
        self.players.pop(p.pid, None)
        cell_members = self.members.get(p.cell)
        if cell_members is not None:
            cell_members.discard(p.pid)
            if not cell_members:
                del self.members[p.cell]
        self.moved.discard(p.pid)
        old = self.prev.pop(p.pid, p.cell)
        if old is not None:
            self.gone[p.pid] = old
        p.room = None

    def move(self, p: Player, x: float, y: float) -> None:
        x = min(max(x, 0.0), self.side)
        y = min(max(y, 0.0), self.side)
        p.x, p.y = x, y
        cell = self.cell_of(x, y)
        if cell != p.cell:
            self.members[p.cell].discard(p.pid)
            if not self.members[p.cell]:
                del self.members[p.cell]
            self.members.setdefault(cell, set()).add(p.pid)
            self.prev.setdefault(p.pid, p.cell)
            p.cell = cell
        self.moved.add(p.pid)

    def view(self, p: Player) -> list[list[Any]]:
        return [[q.pid, q.name, q.x, q.y] for c in self.near(p.cell) for pid in self.members.get(c, ())
                for q in (self.players[pid],)]

    def tick(self, n: int, ts: float) -> None:
        """Send this tick's bodies: one encode per cell for settled players, one per cell changer."""
        if not (self.moved or self.prev or self.gone):
            return
        players, near = self.players, self.near
        src: dict[int, tuple[list, list, list]] = {}  # changes keyed by the cell where they happened
        dst: dict[int, tuple[list, list, list]] = {}  # cell changers, keyed by receiving cell
        for pid in self.moved:
            if pid not in self.prev:
                p = players[pid]
                src.setdefault(p.cell, ([], [], []))[0].append([pid, p.x, p.y])
        for pid, old in self.prev.items():
            p = players[pid]
            if old is None:
                src.setdefault(p.cell, ([], [], []))[1].append([pid, p.name, p.x, p.y])
                continue
            before, after = set(near(old)), near(p.cell)
            for c in after:
                if c in before:
                    dst.setdefault(c, ([], [], []))[0].append([pid, p.x, p.y])
                else:
                    dst.setdefault(c, ([], [], []))[1].append([pid, p.name, p.x, p.y])
            for c in before.difference(after):
                dst.setdefault(c, ([], [], []))[2].append(pid)
        for pid, old in self.gone.items():
            src.setdefault(old, ([], [], []))[2].append(pid)
        head = {"t": "tick", "n": n, "ts": ts}
        bodies: dict[int, dict[str, Any]] = {}
        for cell, pids in self.members.items():
            moved: list = []
            joined: list = []
            left: list = []
            for c in near(cell):
                lists = src.get(c)
                if lists is not None:
                    moved += lists[0]
                    joined += lists[1]
                    left += lists[2]
            lists = dst.get(cell)
            if lists is not None:
                moved += lists[0]
                joined += lists[1]
                left += lists[2]
            body = dict(head)
            if moved:
                body["moved"] = moved
            if joined:
                body["joined"] = joined
            if left:
                body["left"] = left
            bodies[cell] = body
            if len(body) > 3:
                settled = [players[pid].ws for pid in pids if pid not in self.prev]
                broadcast(settled, msgpack.packb(body))
        for pid, old in self.prev.items():
            if old is None:
                continue  # a joiner got the whole view in its joined reply; it hears changes from now on
            p = players[pid]
            body = dict(bodies[p.cell])
            before, after = set(near(old)), near(p.cell)
            fresh = [[q.pid, q.name, q.x, q.y] for c in after if c not in before
                     for qid in self.members.get(c, ()) for q in (players[qid],)]
            gone = [qid for c in before.difference(after) for qid in self.members.get(c, ())]
            if fresh:
                body["joined"] = body.get("joined", []) + fresh
            if gone:
                body["left"] = body.get("left", []) + gone
            broadcast([p.ws], msgpack.packb(body))
        self.moved.clear()
        self.prev.clear()
        self.gone.clear()


class BareServer:
    def __init__(self, tick_rate: float) -> None:
        self.period = 1.0 / tick_rate
        self.tick_rate = tick_rate
        self.rooms = {"town": BareRoom("town"), "forest": BareRoom("forest")}
        self.ids = itertools.count(1)
        self.n = 0

    async def run_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.period
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self.n += 1
            ts = time.time()
            for room in self.rooms.values():
                room.tick(self.n, ts)
            deadline += self.period
            if loop.time() > deadline + 5 * self.period:  # far behind: skip ahead, do not burst
                deadline = loop.time() + self.period

    def place(self, p: Player, room: BareRoom, rid: int | None) -> dict[str, Any]:
        if p.room is not None:
            p.room.remove(p)
        room.add(p, room.side / 2, room.side / 2)
        body = {"t": "joined", "room": room.name, "you": p.pid, "players": room.view(p), "mobs": [],
                "bounds": [room.side, room.side]}
        if rid is not None:
            body["rid"] = rid
        return body

    async def handle(self, ws: ServerConnection) -> None:
        player: Player | None = None
        try:
            async for frame in ws:
                msg = msgpack.unpackb(frame)
                t = msg.get("t")
                rid = msg.get("rid")
                if t == "move" and player is not None and player.room is not None:
                    player.room.move(player, float(msg["x"]), float(msg["y"]))
                elif t == "ping":
                    await ws.send(msgpack.packb({"t": "pong", "rid": rid, "ts": time.time()}))
                elif t == "login" and player is None:
                    player = Player(next(self.ids), str(msg["name"]), ws)
                    welcome = {"t": "welcome", "rid": rid, "session": uuid.uuid4().hex, "token": "bare",
                               "character": {"name": player.name, "level": 1, "xp": 0, "room": "town",
                                             "x": 500.0, "y": 500.0},
                               "tick_rate": self.tick_rate, "protocol": 1}
                    await ws.send(msgpack.packb(welcome))
                    await ws.send(msgpack.packb(self.place(player, self.rooms["town"], None)))
                elif t == "join" and player is not None and msg.get("room") in self.rooms:
                    await ws.send(msgpack.packb(self.place(player, self.rooms[msg["room"]], rid)))
        except ConnectionClosed:
            pass
        finally:
            if player is not None and player.room is not None:
                player.room.remove(player)


async def main_async(host: str, port: int, tick_rate: float) -> None:
    server = BareServer(tick_rate)
    ticks = asyncio.create_task(server.run_ticks())
    async with serve(server.handle, host, port, compression=None, max_size=2**20, backlog=2048,
                     ping_interval=20, ping_timeout=20):
        print(f"bare server listening on ws://{host}:{port}/ws", flush=True)
        await asyncio.Future()  # until killed
    ticks.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bare_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tick-rate", type=float, default=20.0)
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args.host, args.port, args.tick_rate))
    else:
        uvloop.run(main_async(args.host, args.port, args.tick_rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
