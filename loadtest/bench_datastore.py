"""Datastore benchmark: the embedded store's ops/s next to stdlib sqlite3 (WAL) doing the same work.

    python -m loadtest.bench_datastore [--quick] [--json] [--records N] [--loop uvloop|asyncio] [--check]

Prints, in one run, the machine, then one row per workload: our figure, sqlite3's, the ratio and the
issue's target. Workloads: ``get``; ``put`` with ``durability=memory|flush|fsync`` (100 concurrent
writers; p50/p99 latency of acknowledged fsync writes); ``cas`` increment and ``operate`` with
``durability=flush``; recovery (write N records, close, time the reopen). sqlite3 runs the same work
synchronously on one connection in WAL mode, committing every write: ``synchronous=OFF`` stands in for
memory, ``NORMAL`` for flush, ``FULL`` for fsync; ``cas`` is SELECT then ``UPDATE ... WHERE gen=?``.
Bins are msgpack blobs in sqlite3 and are unpacked on read, as our store hands back dicts.
``--check`` exits 1 when a target is missed (not used in CI: figures depend on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from datastore import Key, open_store, ops

NS, SET = "bench", "players"
WRITERS = 100


@dataclass(frozen=True)
class Sizes:
    """Operation counts of one run (full figures or a quick smoke run)."""

    preload: int
    get: int
    put: int
    put_fsync: int
    sqlite_put: int
    sqlite_full: int
    cas: int
    records: int


FULL = Sizes(
    preload=100_000,
    get=1_000_000,
    put=200_000,
    put_fsync=100_000,
    sqlite_put=100_000,
    sqlite_full=3_000,
    cas=200_000,
    records=1_000_000,
)
QUICK = Sizes(
    preload=2_000,
    get=20_000,
    put=4_000,
    put_fsync=2_000,
    sqlite_put=2_000,
    sqlite_full=200,
    cas=4_000,
    records=20_000,
)


@dataclass
class Row:
    """One workload: our figure, sqlite3's, and the target it is judged by."""

    workload: str
    ours: float
    sqlite: float | None
    unit: str = "ops/s"
    target: str = ""
    met: bool | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.ours / self.sqlite if self.sqlite else None


def bins_for(i: int, pad: int = 0) -> dict[str, Any]:
    """A game-like record: a player with name, xp, level, position and recent events."""
    out: dict[str, Any] = {"name": f"player{i}", "xp": i, "level": 1 + i % 50, "pos": [i % 1000, i % 777]}
    if pad:
        out["bio"] = "x" * pad
    return out


def percentile(sorted_ns: list[int], q: float) -> float:
    """q-quantile of sorted nanosecond latencies, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    idx = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[idx] / 1e6


def dir_mb(path: Path) -> float:
    """Bytes of every file under path, in MB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# --- our store ---------------------------------------------------------------------------------------


async def preload(store: Any, n: int) -> list[Key]:
    """Insert n records and return their keys."""
    keys = [Key(NS, SET, i) for i in range(n)]
    for i, key in enumerate(keys):
        await store.put(key, bins_for(i))
    return keys


async def ours_get(base: Path, s: Sizes) -> float:
    """Sequential gets of existing keys through the public async API."""
    store = await open_store(f"file://{base / 'get'}?durability=flush")
    try:
        keys = await preload(store, s.preload)
        n = len(keys)
        get = store.get
        t0 = time.perf_counter()
        for i in range(s.get):
            await get(keys[i % n])
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    return s.get / elapsed


async def ours_put(base: Path, durability: str, total: int) -> tuple[float, list[int], int]:
    """WRITERS concurrent tasks each putting its share of new records.

    Returns ops/s, sorted latencies (ns) and the number of fsyncs the store made (0 if it does not say).
    """
    store = await open_store(f"file://{base / ('put-' + durability)}?durability={durability}")
    per = max(1, total // WRITERS)
    latencies: list[int] = []

    async def writer(w: int) -> None:
        put, clock, lat = store.put, time.perf_counter_ns, latencies
        for j in range(per):
            i = w * per + j
            t = clock()
            await put(Key(NS, SET, i), bins_for(i))
            lat.append(clock() - t)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        elapsed = time.perf_counter() - t0
        fsyncs = int(store.stats().get("fsyncs", 0)) if hasattr(store, "stats") else 0
    finally:
        await store.close()
    latencies.sort()
    return per * WRITERS / elapsed, latencies, fsyncs


async def ours_cas(base: Path, s: Sizes) -> float:
    """Sequential cas increments of the xp bin over many keys (flush durability)."""
    store = await open_store(f"file://{base / 'cas'}?durability=flush")
    try:
        keys = await preload(store, min(s.preload, 10_000))
        n = len(keys)

        def bump(b: dict[str, Any]) -> dict[str, Any]:
            out = dict(b)
            out["xp"] = out.get("xp", 0) + 5
            return out

        cas = store.cas
        t0 = time.perf_counter()
        for i in range(s.cas):
            await cas(keys[i % n], bump)
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    return s.cas / elapsed


async def ours_operate(base: Path, s: Sizes) -> float:
    """Sequential operate calls: incr xp, append an event (capped list), read xp (flush durability)."""
    store = await open_store(f"file://{base / 'operate'}?durability=flush")
    try:
        keys = await preload(store, min(s.preload, 10_000))
        n = len(keys)
        operate = store.operate
        t0 = time.perf_counter()
        for i in range(s.cas):
            await operate(keys[i % n], [ops.incr("xp", 5), ops.append("ev", i, max_len=10), ops.read("xp")])
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    return s.cas / elapsed


async def ours_recovery(base: Path, records: int) -> tuple[float, float, float]:
    """Write records (~200 bytes each), close, time the reopen; returns (records/s, seconds, MB of log)."""
    path = base / "recovery"
    url = f"file://{path}?durability=flush"
    store = await open_store(url)
    try:
        put = store.put
        for i in range(records):
            await put(Key(NS, SET, i), bins_for(i, pad=120))
    finally:
        await store.close()
    mb = dir_mb(path)
    gc.collect()
    t0 = time.perf_counter()
    store = await open_store(url)
    elapsed = time.perf_counter() - t0
    try:
        probe = await store.get(Key(NS, SET, records - 1))
        assert probe is not None and probe.bins["xp"] == records - 1, "recovery lost the last record"
    finally:
        await store.close()
    return records / elapsed, elapsed, mb


# --- sqlite3 baseline --------------------------------------------------------------------------------


def sqlite_open(path: Path, synchronous: str) -> sqlite3.Connection:
    """A WAL-mode connection in autocommit mode (every statement its own transaction)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(
        "CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, gen INTEGER NOT NULL, bins BLOB NOT NULL)"
    )
    return db


def sqlite_preload(db: sqlite3.Connection, n: int) -> None:
    """Bulk insert n records in one transaction (setup, not timed)."""
    db.execute("BEGIN")
    db.executemany(
        "INSERT OR REPLACE INTO kv VALUES (?, 1, ?)", ((i, msgpack.packb(bins_for(i))) for i in range(n))
    )
    db.execute("COMMIT")


def sqlite_get(base: Path, s: Sizes) -> float:
    """SELECT by primary key and unpack the bins."""
    db = sqlite_open(base / "get.db", "NORMAL")
    try:
        sqlite_preload(db, s.preload)
        n, unpack, execute = s.preload, msgpack.unpackb, db.execute
        t0 = time.perf_counter()
        for i in range(s.get):
            row = execute("SELECT gen, bins FROM kv WHERE k=?", (i % n,)).fetchone()
            unpack(row[1])
        return s.get / (time.perf_counter() - t0)
    finally:
        db.close()


def sqlite_put(base: Path, synchronous: str, total: int) -> tuple[float, list[int]]:
    """INSERT OR REPLACE, one commit per write; returns ops/s and latencies (ns)."""
    db = sqlite_open(base / f"put-{synchronous}.db", synchronous)
    latencies: list[int] = []
    try:
        execute, clock, pack = db.execute, time.perf_counter_ns, msgpack.packb
        t0 = time.perf_counter()
        for i in range(total):
            t = clock()
            execute("INSERT OR REPLACE INTO kv VALUES (?, 1, ?)", (i, pack(bins_for(i))))
            latencies.append(clock() - t)
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
    latencies.sort()
    return total / elapsed, latencies


def sqlite_cas(base: Path, s: Sizes, *, name: str, change: Callable[[dict[str, Any], int], None]) -> float:
    """Read, change, then ``UPDATE ... WHERE gen=?`` (synchronous=NORMAL), as a cas loop would."""
    db = sqlite_open(base / f"{name}.db", "NORMAL")
    try:
        n = min(s.preload, 10_000)
        sqlite_preload(db, n)
        execute, pack, unpack = db.execute, msgpack.packb, msgpack.unpackb
        t0 = time.perf_counter()
        for i in range(s.cas):
            k = i % n
            gen, blob = execute("SELECT gen, bins FROM kv WHERE k=?", (k,)).fetchone()
            bins = unpack(blob)
            change(bins, i)
            cur = execute("UPDATE kv SET bins=?, gen=gen+1 WHERE k=? AND gen=?", (pack(bins), k, gen))
            if cur.rowcount != 1:
                raise RuntimeError("conflict in a single-writer benchmark")
        return s.cas / (time.perf_counter() - t0)
    finally:
        db.close()


async def sqlite_cas_threaded(base: Path, s: Sizes) -> float:
    """The same cas step, called the way an asyncio server must call a blocking driver: in a thread.

    A game server cannot run sqlite3 on its event loop (an fsync or a lock wait would stall every tick),
    so each read-then-conditional-update is one ``asyncio.to_thread`` hop. Shown beside the direct loop,
    which is sqlite's best case and no server's real one.
    """
    db = sqlite_open(base / "cas-threaded.db", "NORMAL")
    try:
        n = min(s.preload, 10_000)
        sqlite_preload(db, n)
        execute, pack, unpack = db.execute, msgpack.packb, msgpack.unpackb

        def step(i: int) -> None:
            k = i % n
            gen, blob = execute("SELECT gen, bins FROM kv WHERE k=?", (k,)).fetchone()
            bins = unpack(blob)
            _cas_change(bins, i)
            cur = execute("UPDATE kv SET bins=?, gen=gen+1 WHERE k=? AND gen=?", (pack(bins), k, gen))
            if cur.rowcount != 1:
                raise RuntimeError("conflict in a single-writer benchmark")

        count = max(1, s.cas // 4)
        t0 = time.perf_counter()
        for i in range(count):
            await asyncio.to_thread(step, i)
        return count / (time.perf_counter() - t0)
    finally:
        db.close()


def _cas_change(bins: dict[str, Any], i: int) -> None:
    bins["xp"] = bins.get("xp", 0) + 5


def _operate_change(bins: dict[str, Any], i: int) -> None:
    bins["xp"] = bins.get("xp", 0) + 5
    bins["ev"] = [*bins.get("ev", []), i][-10:]


# --- the run -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, core count, OS and Python: figures mean nothing without them."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        # other work on the machine skews every figure: show it next to them
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run our store on (uvloop when installed: what the game server uses)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_all(s: Sizes, loop_name: str, progress: Callable[[str], None]) -> list[Row]:
    """Every workload on both engines; one fresh temp dir per run."""
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-ds-") as tmp,
        asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner,
    ):
        base = Path(tmp)
        (base / "sqlite").mkdir()
        sq = base / "sqlite"

        def run(coro: Coroutine[Any, Any, Any]) -> Any:
            gc.collect()
            return runner.run(coro)

        progress("get")
        ours, theirs = run(ours_get(base, s)), sqlite_get(sq, s)
        rows.append(Row("get", ours, theirs, target=">= 500,000 ops/s", met=ours >= 500_000))

        for durability, sync in (("memory", "OFF"), ("flush", "NORMAL")):
            progress(f"put {durability}")
            ours, _, _ = run(ours_put(base, durability, s.put))
            theirs, _ = sqlite_put(sq, sync, s.sqlite_put)
            rows.append(Row(f"put {durability} ({WRITERS} writers) vs sqlite {sync}", ours, theirs))

        progress("put fsync")
        ours, lat, fsyncs = run(ours_put(base, "fsync", s.put_fsync))
        theirs, slat = sqlite_put(sq, "FULL", s.sqlite_full)
        p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
        ratio = ours / theirs
        rows.append(
            Row(
                f"put fsync ({WRITERS} writers) vs sqlite FULL",
                ours,
                theirs,
                target=">= 40,000 ops/s, p99 <= 10 ms, >= 8x",
                met=ours >= 40_000 and p99 <= 10.0 and ratio >= 8,
                extra={
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "sqlite_p50_ms": percentile(slat, 0.50),
                    "sqlite_p99_ms": percentile(slat, 0.99),
                    "writes_per_fsync": len(lat) / fsyncs if fsyncs else 0.0,
                },
            )
        )

        progress("cas")
        ours, theirs = run(ours_cas(base, s)), sqlite_cas(sq, s, name="cas", change=_cas_change)
        rows.append(
            Row(
                "cas incr (flush) vs sqlite NORMAL",
                ours,
                theirs,
                target=">= 80,000 ops/s, >= 5x",
                met=ours >= 80_000 and ours / theirs >= 5,
            )
        )

        threaded = run(sqlite_cas_threaded(sq, s))
        rows.append(
            Row(
                "cas incr (flush) vs sqlite NORMAL in a thread",
                ours,
                threaded,
                target=">= 5x (how an asyncio server calls sqlite)",
                met=ours / threaded >= 5,
            )
        )

        progress("operate")
        ours, theirs = run(ours_operate(base, s)), sqlite_cas(sq, s, name="operate", change=_operate_change)
        rows.append(Row("operate incr+append+read (flush)", ours, theirs))

        progress(f"recovery of {s.records:,} records")
        rate, seconds, mb = run(ours_recovery(base, s.records))
        rows.append(
            Row(
                f"recovery ({s.records:,} records)",
                rate,
                None,
                unit="records/s",
                target=">= 300,000 records/s",
                met=rate >= 300_000,
                extra={"seconds": seconds, "seconds_per_million": seconds * 1e6 / s.records, "log_mb": mb},
            )
        )
    return rows


def render(info: dict[str, Any], rows: list[Row]) -> str:
    """The human-readable table."""
    out = [
        f"machine: {info['cpu']}, {info['cores']} cores, {info['os']}, Python {info['python']}, "
        f"sqlite {info['sqlite']}, loop {info['loop']}, load avg {info['load_avg_1m']} at start"
        f"{' (quick)' if info['quick'] else ''}",
        "",
        f"{'workload':<42} {'ours':>16} {'sqlite3 WAL':>16} {'ratio':>8}  {'target':<38} met",
        "-" * 130,
    ]
    for r in rows:
        theirs = f"{r.sqlite:,.0f}" if r.sqlite is not None else "n/a"
        ratio = f"{r.ratio:.1f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: ""}[r.met]
        out.append(
            f"{r.workload:<42} {r.ours:>16,.0f} {theirs:>16} {ratio:>8}  {r.target:<38} {met}"
            + (f"   [{r.unit}]" if r.unit != "ops/s" else "")
        )
        if "p99_ms" in r.extra:
            e = r.extra
            out.append(
                f"{'':<42} latency ours p50 {e['p50_ms']:.2f} ms p99 {e['p99_ms']:.2f} ms; "
                f"sqlite FULL p50 {e['sqlite_p50_ms']:.2f} ms p99 {e['sqlite_p99_ms']:.2f} ms; "
                f"{e['writes_per_fsync']:.0f} writes per fsync"
            )
        if "log_mb" in r.extra:
            e = r.extra
            out.append(
                f"{'':<42} reopen {e['seconds']:.2f} s, {e['seconds_per_million']:.2f} s per million, "
                f"{e['log_mb']:.1f} MB of log (sqlite3 has no replay: n/a)"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of a few seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--records", type=int, default=None, help="records for the recovery figure")
    try:
        import uvloop  # noqa: F401

        default_loop = "uvloop"
    except ImportError:
        default_loop = "asyncio"
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=default_loop)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    if args.records is not None:
        sizes = Sizes(**{**asdict(sizes), "records": max(1, args.records)})
    info = {**machine(), "loop": args.loop, "quick": args.quick}

    def progress(what: str) -> None:
        if not args.json:
            print(f"... {what}", file=sys.stderr, flush=True)

    rows = run_all(sizes, args.loop, progress)
    if args.json:
        print(
            json.dumps(
                {"machine": info, "results": [{**asdict(r), "ratio": r.ratio} for r in rows]}, indent=2
            )
        )
    else:
        print(render(info, rows))
    missed = [r.workload for r in rows if r.met is False]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
