"""Child process of ``test_crash.py``: writes to a fsync store and reports every acknowledged write.

Usage: ``python crash_writer.py DIR MODE SEED [EXTRA_QUERY]`` with MODE ``plain`` or ``compact``
(``compact`` also runs ``store.compact()`` in a loop while writing, with bigger records so segments fill
and die quickly). EXTRA_QUERY is appended to the store URL (e.g. ``segment_bytes=65536``).

Each key is written by exactly one sequential task, so at most one write per key is in flight when the
parent SIGKILLs us: the stored state after recovery must be the last acknowledged one or the in-flight one.

Lines on stdout, tab separated, fields are Python literals (``ast.literal_eval``), flushed one by one:

- ``B key gen bins``: state read at start-up, before any write of this run (``0 None`` = absent);
- ``I key gen bins``: intent, printed BEFORE the write is issued: the state if that write lands;
- ``A key gen bins``: the write announced by this key's last ``I`` line was acknowledged;
- ``C n``: n compactions completed so far; ``READY n`` after start-up; ``DONE`` at a clean end;
- ``X message``: the store did something the writer did not expect (the parent fails the test).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from datastore import Key, open_store, ops

NAMESPACE = "crash"
SET = "s"
TASKS = 24
KEYS_PER_TASK = {"plain": 6, "compact": 2}
MAX_SECONDS = 30.0  # a run stops by itself even if the parent never kills it
MAX_WRITES_PER_TASK = 50_000
APPEND_MAX = 5

State = tuple[int, dict[str, Any] | None]  # (generation, bins); (0, None) = absent


def user_key(i: int) -> str | int | bytes:
    """Key number -> user key; all three user-key types are exercised."""
    return (f"k{i}", i, f"b{i}".encode())[i % 3]


def keys_of_task(task: int, mode: str) -> list[int]:
    """The key numbers owned by one writer task (disjoint between tasks)."""
    per = KEYS_PER_TASK[mode]
    return list(range(task * per, (task + 1) * per))


def emit(tag: str, *fields: Any) -> None:
    """Print one line (tag, then Python literals) and flush it now: the parent may kill us right after."""
    sys.stdout.write("\t".join([tag, *map(repr, fields)]) + "\n")
    sys.stdout.flush()


def random_value(rng: random.Random, pad: int) -> Any:
    """A bin value of a random msgpack-able type."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randrange(-(2**40), 2**40)
    if kind == 1:
        return rng.random() * 1e6
    if kind == 2:
        return "s" * rng.randrange(pad + 1) + str(rng.random())
    if kind == 3:
        return rng.randbytes(rng.randrange(1, 16 + pad))
    if kind == 4:
        return rng.random() < 0.5
    if kind == 5:
        return [rng.randrange(100), "x", [1.5, b"y"]]
    if kind == 6:
        return {"a": rng.randrange(10), "b": ["c", {"d": None}]}
    return "é✓" * rng.randrange(1, 4)


class KeyWriter:
    """One sequential task owning a few keys: issues writes and knows their expected outcome."""

    def __init__(self, store: Any, rng: random.Random, pad: int, states: dict[int, State]) -> None:
        self.store = store
        self.rng = rng
        self.pad = pad
        self.states = states

    async def run(self, deadline: float) -> None:
        """Write until the deadline; stop at the first surprise (after reporting it)."""
        for _ in range(MAX_WRITES_PER_TASK):
            if time.monotonic() > deadline:
                return
            i = self.rng.choice(list(self.states))
            try:
                await self.write_one(i)
            except Exception as exc:  # report, the parent turns it into a test failure
                emit("X", f"key {user_key(i)!r}: {type(exc).__name__}: {exc}")
                return

    async def write_one(self, i: int) -> None:
        """Pick a write valid for the key's current state, announce it, issue it, acknowledge it."""
        rng = self.rng
        key = Key(NAMESPACE, SET, user_key(i))
        gen, bins = self.states[i]
        new_gen = gen + 1 if bins is not None else 1
        choice = rng.random()
        if bins is None and choice < 0.15:  # create a fresh record
            new = {"n": rng.randrange(100), "l": [], "v": random_value(rng, self.pad)}
            emit("I", key.user_key, new_gen, new)
            got = await self.store.put(key, new, exists="create")
        elif bins is not None and choice < 0.1:
            emit("I", key.user_key, 0, None)
            got = 0 if await self.store.delete(key) else -1
            new = None
        elif bins is not None and choice < 0.25:  # replace: drops every other bin
            new = {"n": rng.randrange(100), "r": random_value(rng, self.pad)}
            emit("I", key.user_key, new_gen, new)
            got = await self.store.put(key, new, exists="replace")
        elif choice < 0.55:  # merge some bins, remove one of the x* bins
            change: dict[str, Any] = {f"x{rng.randrange(4)}": random_value(rng, self.pad) for _ in range(2)}
            change["v"] = random_value(rng, self.pad)
            if rng.random() < 0.3:
                change[f"x{rng.randrange(4)}"] = None
            new = {**(bins or {}), **change}
            new = {k: v for k, v in new.items() if v is not None}
            if "n" not in new:  # keep the numeric bin numeric and always present
                new["n"] = change["n"] = 0
            emit("I", key.user_key, new_gen, new)
            got = await self.store.put(key, change)
        elif choice < 0.8:  # operate: one generation bump for several ops
            step, item = rng.randrange(1, 10), rng.randrange(1000)
            new = dict(bins or {})
            new["n"] = new.get("n", 0) + step
            new["l"] = ([*new.get("l", []), item])[-APPEND_MAX:]
            new["o"] = random_value(rng, self.pad)
            emit("I", key.user_key, new_gen, new)
            rec = await self.store.operate(
                key,
                [ops.incr("n", step), ops.append("l", item, max_len=APPEND_MAX), ops.put("o", new["o"])],
            )
            got = rec.generation
        else:  # cas increment of a counter bin
            new = dict(bins or {})
            new["c"] = new.get("c", 0) + 1
            if "n" not in new:
                new["n"] = 0

            def bump(current: dict[str, Any]) -> dict[str, Any]:
                out = dict(current)
                out["c"] = out.get("c", 0) + 1
                out.setdefault("n", 0)
                return out

            emit("I", key.user_key, new_gen, new)
            rec = await self.store.cas(key, bump)
            got = rec.generation
        expected_gen = 0 if new is None else new_gen
        if got != expected_gen:
            raise AssertionError(f"write returned generation {got}, expected {expected_gen}")
        self.states[i] = (expected_gen, new)
        emit("A", key.user_key, expected_gen, new)


async def compactor(store: Any, deadline: float) -> None:
    """Run compaction back to back while the writers write."""
    done = 0
    while time.monotonic() < deadline and done < 100_000:
        try:
            await store.compact(force=done % 2 == 1)  # force: rewrite segments with any dead byte
        except Exception as exc:
            emit("X", f"compact: {type(exc).__name__}: {exc}")
            return
        done += 1
        emit("C", done)
        await asyncio.sleep(0.005)


async def main(directory: str, mode: str, seed: int, extra_query: str) -> None:
    """Open the store, report the start-up state, then write concurrently until killed or done."""
    url = f"file://{directory}?durability=fsync" + (f"&{extra_query}" if extra_query else "")
    store = await open_store(url)
    rng = random.Random(seed)
    all_keys = [i for t in range(TASKS) for i in keys_of_task(t, mode)]
    recs = await store.get_many([Key(NAMESPACE, SET, user_key(i)) for i in all_keys])
    states: dict[int, State] = {}
    for i, rec in zip(all_keys, recs, strict=True):
        states[i] = (0, None) if rec is None else (rec.generation, dict(rec.bins))
        emit("B", user_key(i), *states[i])
    emit("READY", len(all_keys))
    pad = 300 if mode == "compact" else 20
    deadline = time.monotonic() + MAX_SECONDS
    writers = [
        KeyWriter(store, random.Random(rng.random()), pad, {i: states[i] for i in keys_of_task(t, mode)})
        for t in range(TASKS)
    ]
    jobs = [w.run(deadline) for w in writers]
    if mode == "compact":
        jobs.append(compactor(store, deadline))
    await asyncio.gather(*jobs)
    await store.close()
    emit("DONE")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else ""))
