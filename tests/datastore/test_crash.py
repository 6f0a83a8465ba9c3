"""Crash safety of the file store: SIGKILL a writer at random moments, reopen, check every acknowledged write.

A child process (``crash_writer.py``) writes with ``durability=fsync`` and prints an intent line before each
write and an ack line after it. After the kill the store must hold, for every key, either the last
acknowledged state or the state of the one write that was in flight. Rounds reuse the directory, so
recovery of recovered data (and of logs torn by the previous kill) is exercised too. Then the log itself is
damaged on purpose: a torn tail must be truncated, a flipped byte must be reported with file and offset and
be repairable.
"""

from __future__ import annotations

import ast
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from datastore import DatastoreError, Key, open_store

from .crash_writer import NAMESPACE, SET, TASKS, keys_of_task, user_key

pytestmark = pytest.mark.slow

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 5
READY_TIMEOUT = 30.0  # start-up includes recovery of the previous rounds' logs
KILL_WINDOW = (0.15, 1.2)  # seconds after READY
SEGMENT_QUERY = "segment_bytes=65536"  # small segments so compaction has sealed segments to rewrite
BASE_SEED = int(os.environ.get("CRASH_SEED", "20240601"))

UserKey = str | int | bytes
State = tuple[int, dict[str, Any] | None]  # (generation, bins); (0, None) = absent
ABSENT: State = (0, None)


@dataclass
class RoundLog:
    """What one child run reported before it died."""

    boot: dict[UserKey, State] = field(default_factory=dict)
    acked: dict[UserKey, State] = field(default_factory=dict)
    in_flight: dict[UserKey, State] = field(default_factory=dict)  # intent with no ack after it
    acks: int = 0
    compactions: int = 0
    ready: bool = False
    surprises: list[str] = field(default_factory=list)
    stderr: str = ""


def run_writer(directory: Path, mode: str, seed: int, kill_at: float, from_spawn: bool) -> RoundLog:
    """Run one child, SIGKILL it ``kill_at`` seconds after READY (or after spawn), return what it reported."""
    err_path = directory.parent / f"writer-{seed}.err"
    lines: list[str] = []
    ready = threading.Event()
    with open(err_path, "w+b") as err:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(directory), mode, str(seed), SEGMENT_QUERY],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            encoding="utf-8",
        )
        assert proc.stdout is not None

        def read() -> None:  # the child writes a lot; never let the pipe fill up
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                if line.startswith("READY"):
                    ready.set()
            ready.set()  # EOF: the child died or finished

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if from_spawn:
                time.sleep(kill_at)
            else:
                ready.wait(READY_TIMEOUT)
                time.sleep(kill_at)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        reader.join(timeout=10)
        assert not reader.is_alive(), "stdout reader did not finish after the child died"
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return parse_lines(lines, stderr)


def parse_lines(lines: list[str], stderr: str) -> RoundLog:
    """Turn the child's complete lines into acked and in-flight states (a torn last line is ignored)."""
    log = RoundLog(stderr=stderr)
    for line in lines:
        if not line.endswith("\n"):
            break  # killed mid-print: that write was never issued (intent) or is covered by its intent (ack)
        tag, *rest = line.rstrip("\n").split("\t")
        if tag == "READY":
            log.ready = True
        elif tag == "C":
            log.compactions = int(rest[0])
        elif tag == "X":
            log.surprises.append(rest[0])
        elif tag in ("B", "I", "A"):
            uk, gen, bins = (ast.literal_eval(f) for f in rest)
            state: State = (gen, bins)
            if tag == "B":
                log.boot[uk] = state
            elif tag == "I":
                log.in_flight[uk] = state
            else:
                log.acked[uk] = state
                log.in_flight.pop(uk, None)
                log.acks += 1
    return log


def all_user_keys(mode: str) -> list[UserKey]:
    """Every key a writer of this mode may touch."""
    return [user_key(i) for t in range(TASKS) for i in keys_of_task(t, mode)]


async def read_back(directory: Path, universe: list[UserKey]) -> dict[UserKey, State]:
    """Reopen the store in-process and read every key; also check scan agrees with get."""
    store = await open_store(f"file://{directory}?durability=fsync&{SEGMENT_QUERY}")
    try:
        recs = await store.get_many([Key(NAMESPACE, SET, uk) for uk in universe])
        found = {
            uk: ABSENT if rec is None else (rec.generation, dict(rec.bins))
            for uk, rec in zip(universe, recs, strict=True)
        }
        scanned = {
            rec.key.user_key: (rec.generation, dict(rec.bins)) async for rec in store.scan(NAMESPACE, SET)
        }
        report = await store.verify()  # the engine's own index-vs-log checker (``datastore verify``)
        assert report["ok"], f"verify after recovery: {report}"
    finally:
        await store.close()
    live = {uk: s for uk, s in found.items() if s != ABSENT}
    assert scanned == live, "scan after recovery disagrees with get"
    return found


def check_round(model: dict[UserKey, State], log: RoundLog, found: dict[UserKey, State], where: str) -> None:
    """Every acknowledged write survived; a key with a write in flight holds either outcome."""
    assert not log.surprises, f"{where}: writer saw unexpected results: {log.surprises[:5]}"
    for uk, state in log.boot.items():
        assert state == model[uk], f"{where}: start-up read of {uk!r} = {state}, verified state {model[uk]}"
    problems = []
    for uk, got in found.items():
        acked = log.acked.get(uk, model[uk])
        allowed = [acked]
        if uk in log.in_flight:
            allowed.append(log.in_flight[uk])
        if got not in allowed:
            problems.append(f"{uk!r}: stored {got}, acknowledged {acked}, in flight {log.in_flight.get(uk)}")
    assert not problems, f"{where}: {len(problems)} keys lost acknowledged writes:\n" + "\n".join(
        problems[:10]
    )


def crash_rounds(tmp_path: Path, mode: str, seed: int) -> tuple[int, int]:
    """Run ROUNDS kill/reopen/check rounds in one directory; return (acks, compactions) in total."""
    directory = tmp_path / "store"
    directory.mkdir()
    universe = all_user_keys(mode)
    model: dict[UserKey, State] = dict.fromkeys(universe, ABSENT)
    rng = random.Random(seed)
    acks = compactions = 0
    for rnd in range(ROUNDS):
        # one round kills within the first half second of the child's life: during start-up/recovery
        early = rnd == ROUNDS - 2
        kill_at = rng.uniform(0.0, 0.5) if early else rng.uniform(*KILL_WINDOW)
        log = run_writer(directory, mode, rng.randrange(2**31), kill_at, from_spawn=early)
        where = f"{mode} round {rnd} (seed {seed}, kill at {kill_at:.2f}s{' from spawn' if early else ''})"
        assert log.ready or early, f"{where}: child never got ready; stderr:\n{log.stderr[-2000:]}"
        found = asyncio.run(read_back(directory, universe))
        check_round(model, log, found, where)
        model = found
        acks += log.acks
        compactions += log.compactions
    return acks, compactions


def test_sigkill_during_concurrent_fsync_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    acks, _ = crash_rounds(tmp_path, "plain", BASE_SEED)
    assert acks >= 200, f"only {acks} acknowledged writes in {ROUNDS} rounds: the test exercised too little"


def test_sigkill_during_compaction_loses_no_acknowledged_write(tmp_path: Path) -> None:
    acks, compactions = crash_rounds(tmp_path, "compact", BASE_SEED + 1)
    assert acks >= 200, f"only {acks} acknowledged writes in {ROUNDS} rounds: the test exercised too little"
    assert compactions >= ROUNDS, f"only {compactions} compactions ran"


# --- deliberate damage to the log --------------------------------------------------------------------


SEGMENT_NAME = re.compile(r"^\d{10}-\d{4}\.log$")  # the engine's segment file names sort in replay order


def log_files(directory: Path) -> list[Path]:
    """The store's non-empty log segment files, in replay order."""
    return sorted(p for p in directory.iterdir() if SEGMENT_NAME.match(p.name) and p.stat().st_size > 0)


def populate(directory: Path, n: int, pad: int) -> dict[UserKey, State]:
    """Write n distinct records (each once) with fsync and close; return what was written."""

    async def go() -> dict[UserKey, State]:
        store = await open_store(f"file://{directory}?durability=fsync")
        written: dict[UserKey, State] = {}
        try:
            for i in range(n):
                uk = user_key(i)
                bins = {"i": i, "pad": "p" * pad, "blob": bytes([i % 256]) * 8, "l": [i, str(i)]}
                gen = await store.put(Key(NAMESPACE, SET, uk), bins)
                written[uk] = (gen, bins)
        finally:
            await store.close()
        return written

    return asyncio.run(go())


async def read_all(directory: Path, universe: list[UserKey]) -> dict[UserKey, State]:
    """Open, read every key of the universe, close."""
    store = await open_store(f"file://{directory}?durability=fsync")
    try:
        recs = await store.get_many([Key(NAMESPACE, SET, uk) for uk in universe])
    finally:
        await store.close()
    return {
        uk: ABSENT if r is None else (r.generation, dict(r.bins))
        for uk, r in zip(universe, recs, strict=True)
    }


@pytest.mark.parametrize("cut", [1, 9, 2000, 3990])  # last byte, inside the header area, mid-body, near start
def test_torn_tail_is_truncated_and_earlier_records_survive(tmp_path: Path, cut: int) -> None:
    written = populate(tmp_path, 200, pad=40)
    last = user_key(199)
    # a big last record (a ~4 KB frame) so that every cut lands inside its frame
    big = {"big": "z" * 4000}

    async def add_big() -> None:
        store = await open_store(f"file://{tmp_path}?durability=fsync")
        try:
            await store.put(Key(NAMESPACE, SET, "big"), big)
        finally:
            await store.close()

    asyncio.run(add_big())
    tail = log_files(tmp_path)[-1]
    size = tail.stat().st_size
    os.truncate(tail, size - cut)

    universe = [*written, "big"]
    found = asyncio.run(read_all(tmp_path, universe))
    assert found["big"] == ABSENT, "a record whose frame was cut in half came back"
    for uk, state in written.items():
        assert found[uk] == state, f"{uk!r} damaged by tail truncation (last written: {last!r})"

    # the torn bytes must really be gone: writes after the truncation are readable after another reopen
    async def write_after() -> None:
        store = await open_store(f"file://{tmp_path}?durability=fsync")
        try:
            assert await store.put(Key(NAMESPACE, SET, "after"), {"ok": True}) == 1
        finally:
            await store.close()

    asyncio.run(write_after())
    found = asyncio.run(read_all(tmp_path, [*universe, "after"]))
    assert found["after"] == (1, {"ok": True})
    assert all(found[uk] == state for uk, state in written.items())


def corrupt_middle(directory: Path, delta: int) -> tuple[Path, int]:
    """Flip one byte delta bytes past the middle of the biggest log file; return (file, offset)."""
    target = max(log_files(directory), key=lambda p: p.stat().st_size)
    offset = target.stat().st_size // 2 + delta
    with open(target, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))
    return target, offset


# frames are ~150 bytes: these deltas hit every part of a frame (marker, length, checksum, body) somewhere
@pytest.mark.parametrize("delta", [0, 1, 2, 3, 5, 8, 13, 40, 77])
def test_flipped_byte_is_reported_with_file_and_offset_then_repair_keeps_good_records(
    tmp_path: Path, delta: int
) -> None:
    written = populate(tmp_path, 400, pad=60)
    target, offset = corrupt_middle(tmp_path, delta)

    with pytest.raises(DatastoreError) as info:
        asyncio.run(read_all(tmp_path, list(written)))
    err = info.value
    assert err.code == "corrupt_log", f"code {err.code!r}: {err}"
    message = str(err)
    assert target.name in message, f"error does not name the file {target.name}: {message}"
    numbers = [int(tok) for tok in _digits(message)]
    assert any(offset - 300 <= n <= offset for n in numbers), f"no frame offset before {offset} in: {message}"

    url = f"file://{tmp_path}?durability=fsync"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from datastore.cli import main; sys.exit(main())",
            "repair",
            "--store",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"repair failed: {result.stdout}\n{result.stderr}"

    found = asyncio.run(read_all(tmp_path, list(written)))
    lost = [uk for uk, state in written.items() if found[uk] != state]
    # one record's frame is damaged; every other record must be kept exactly
    assert len(lost) == 1, f"repair lost {len(lost)} records (expected exactly the damaged one): {lost[:10]}"
    for uk in lost:
        assert found[uk] == ABSENT, f"damaged record {uk!r} came back with altered content {found[uk]}"


def _digits(text: str) -> list[str]:
    """Every run of decimal digits in text (offsets may be printed as 'offset 1234' or '@1234')."""
    out: list[str] = []
    run = ""
    for ch in text + " ":
        if ch.isdigit():
            run += ch
        elif run:
            out.append(run)
            run = ""
    return out
