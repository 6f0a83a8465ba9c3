"""Model-based tests: random sequences of operations on the store, every read compared with a dict model.

A ``hypothesis.stateful`` machine drives the public async API (one event loop per machine run) and keeps
``{key: (generation, bins)}``. Writes that must fail (generation mismatch, create on a present record,
update/replace on an absent one, incr of a non-number, append to a non-list) must raise the matching error
and change nothing. For the file backend the machine also closes and reopens the store and compacts it, so
recovery and compaction are checked against the same model. Runs on ``memory://`` and on ``file://`` with
``durability=flush`` and ``fsync``.
"""

from __future__ import annotations

import asyncio
import copy
import math
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from datastore import (
    DatastoreError,
    GenerationError,
    InvalidBinError,
    Key,
    RecordExistsError,
    RecordNotFoundError,
    open_store,
    ops,
)

State = tuple[int, dict[str, Any]]

KEYS = [
    Key("ns", "a", "k1"),
    Key("ns", "a", 2),
    Key("ns", "a", b"k3"),
    Key("ns", "b", "k1"),  # same user key as in set "a": a different record
    Key("ns", "b", 2),
]
SETS = [("ns", "a"), ("ns", "b")]
BIN_NAMES = ["a", "b", "n", "l"]

ints = st.integers(-(2**40), 2**40)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)
scalars = st.one_of(ints, floats, st.text(max_size=6), st.binary(max_size=6), st.booleans())
values = st.one_of(
    scalars,
    st.lists(st.one_of(ints, st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=3), ints, max_size=2),
)
bin_maps = st.dictionaries(st.sampled_from(BIN_NAMES), st.one_of(values, st.none()), min_size=1, max_size=3)
full_bin_maps = st.dictionaries(st.sampled_from(BIN_NAMES), values, min_size=1, max_size=3)
keys = st.sampled_from(KEYS)
gen_modes = st.sampled_from(["none", "none", "none", "match", "stale", "ahead"])  # mostly unconditional


def is_number(v: Any) -> bool:
    """incr applies to ints and floats (bool is not a number here)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def same(a: Any, b: Any) -> bool:
    """Equality that also distinguishes 1 from 1.0 and True from 1 (msgpack keeps the types)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


class StoreModel(RuleBasedStateMachine):
    """The store against ``dict[Key, (generation, bins)]``; subclasses pick the backend."""

    url_template = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="ds-model-")
        self.url = self.url_template.format(dir=self.tmp)
        self.store = self.run(open_store(self.url))
        self.model: dict[Key, State] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------------------------

    def generation_arg(self, key: Key, mode: str) -> int | None:
        """None, the current generation, an older one or a future one (both wrong)."""
        gen = self.model[key][0] if key in self.model else 0
        return {"none": None, "match": gen, "stale": gen - 1, "ahead": gen + 1}[mode]

    def expect_error(self, call: Callable[[], Any], allowed: tuple[type[DatastoreError], ...]) -> None:
        """The call must raise one of the allowed errors; the model stays as it is."""
        try:
            result = self.run(call())
        except allowed:
            return
        except DatastoreError as exc:
            raise AssertionError(f"raised {type(exc).__name__}({exc}), expected one of {allowed}") from exc
        raise AssertionError(f"returned {result!r}, expected one of {allowed}")

    def check_record(self, key: Key, rec: Any) -> None:
        """A read result equals the model."""
        if key not in self.model:
            assert rec is None, f"{key}: expected absent, got {rec}"
            return
        gen, bins = self.model[key]
        assert rec is not None, f"{key}: expected gen {gen} {bins}, got None"
        assert rec.key == key
        assert rec.generation == gen, f"{key}: generation {rec.generation}, model {gen}"
        assert same(dict(rec.bins), bins), f"{key}: bins {rec.bins}, model {bins}"

    def generation_error_expected(self, key: Key, generation: int | None) -> bool:
        """A given generation must equal the record's (0 for an absent record)."""
        current = self.model[key][0] if key in self.model else 0
        return generation is not None and generation != current

    # --- writes -------------------------------------------------------------------------------------

    @rule(key=keys, bins=bin_maps, exists=st.sampled_from(["upsert", "create", "update"]), mode=gen_modes)
    def put(self, key: Key, bins: dict[str, Any], exists: str, mode: str) -> None:
        generation = self.generation_arg(key, mode)
        present = key in self.model

        def call() -> Any:
            return self.store.put(key, bins, generation=generation, exists=exists)

        # the exists rule is checked before the generation rule
        if exists == "create" and present:
            return self.expect_error(call, (RecordExistsError,))
        if exists == "update" and not present:
            return self.expect_error(call, (RecordNotFoundError,))
        if self.generation_error_expected(key, generation):
            return self.expect_error(call, (GenerationError,))
        merged = {**(self.model[key][1] if present else {}), **bins}
        merged = {k: v for k, v in merged.items() if v is not None}  # may be empty: a record without bins
        gen = self.run(call())
        expected_gen = self.model[key][0] + 1 if present else 1
        assert gen == expected_gen, f"put returned generation {gen}, expected {expected_gen}"
        self.model[key] = (gen, merged)

    @rule(key=keys, bins=full_bin_maps, mode=gen_modes)
    def replace(self, key: Key, bins: dict[str, Any], mode: str) -> None:
        generation = self.generation_arg(key, mode)

        def call() -> Any:
            return self.store.put(key, bins, generation=generation, exists="replace")

        if key not in self.model:
            return self.expect_error(call, (RecordNotFoundError,))
        if self.generation_error_expected(key, generation):
            return self.expect_error(call, (GenerationError,))
        gen = self.run(call())
        assert gen == self.model[key][0] + 1
        self.model[key] = (gen, dict(bins))

    @rule(
        key=keys,
        steps=st.lists(
            st.one_of(
                st.tuples(st.just("put"), st.sampled_from(BIN_NAMES), values),
                # mostly on bins that hold the right type, sometimes on others (must fail cleanly)
                st.tuples(
                    st.just("incr"), st.sampled_from(["n", "n", "n", "a"]), st.one_of(ints, ints, floats)
                ),
                st.tuples(
                    st.just("append"),
                    st.sampled_from(["l", "l", "l", "b"]),
                    ints,
                    st.one_of(st.none(), st.integers(1, 3)),
                ),
                st.tuples(st.just("remove"), st.sampled_from(BIN_NAMES)),
                st.tuples(st.just("read"), st.sampled_from(BIN_NAMES)),
                st.tuples(st.just("read_all"), st.none()),
                st.tuples(st.just("touch"), st.none()),
            ),
            min_size=1,
            max_size=4,
        ),
        mode=gen_modes,
    )
    def operate(self, key: Key, steps: list[tuple[Any, ...]], mode: str) -> None:
        generation = self.generation_arg(key, mode)
        present = key in self.model
        bins = dict(self.model[key][1]) if present else {}
        op_list = []
        bad_type = False
        reads: dict[str, Any] = {}
        for step in steps:
            kind, name = step[0], step[1]
            if kind == "put":
                op_list.append(ops.put(name, step[2]))
                bins[name] = step[2]
            elif kind == "incr":
                op_list.append(ops.incr(name, step[2]))
                old = bins.get(name, 0)
                if not is_number(old):
                    bad_type = True
                else:
                    bins[name] = old + step[2]
            elif kind == "append":
                op_list.append(ops.append(name, step[2], max_len=step[3]))
                old = bins.get(name, [])
                if not isinstance(old, list):
                    bad_type = True
                else:
                    new = [*old, step[2]]
                    bins[name] = new[-step[3] :] if step[3] else new
            elif kind == "remove":
                op_list.append(ops.remove(name))
                bins.pop(name, None)
            elif kind == "touch":
                op_list.append(ops.touch(None))
            elif kind == "read_all":
                op_list.append(ops.read())
                reads.update(copy.deepcopy(bins))
            else:
                op_list.append(ops.read(name))
                if name in bins:  # a missing bin is left out of the result
                    reads[name] = copy.deepcopy(bins[name])
        writes = any(s[0] not in ("read", "read_all") for s in steps)
        creates = any(s[0] in ("put", "incr", "append") for s in steps)

        def call() -> Any:
            return self.store.operate(key, op_list, generation=generation)

        if not present and not creates:
            return self.expect_error(call, (RecordNotFoundError,))  # nothing to create the record with
        if self.generation_error_expected(key, generation):
            return self.expect_error(call, (GenerationError,))
        if bad_type:
            return self.expect_error(call, (InvalidBinError,))
        rec = self.run(call())
        expected_gen = (self.model[key][0] if present else 0) + (1 if writes else 0)
        assert rec.generation == expected_gen, f"operate gen {rec.generation}, expected {expected_gen}"
        assert same(dict(rec.bins), reads), f"operate returned bins {rec.bins}, reads were {reads}"
        if writes:
            self.model[key] = (expected_gen, bins)

    @rule(key=keys, mode=gen_modes)
    def delete(self, key: Key, mode: str) -> None:
        generation = self.generation_arg(key, mode)

        def call() -> Any:
            return self.store.delete(key, generation=generation)

        if key in self.model and self.generation_error_expected(key, generation):
            self.expect_error(call, (GenerationError,))
            return
        if key not in self.model:
            assert self.run(call()) is False, "delete of an absent record must return False"
            return
        assert self.run(call()) is True
        del self.model[key]

    @rule(key=keys, amount=st.integers(-5, 50))
    def cas(self, key: Key, amount: int) -> None:
        old = self.model[key][1] if key in self.model else {}
        if "n" in old and not is_number(old["n"]):
            return  # fn would fail: nothing to learn about the store

        def bump(bins: dict[str, Any]) -> dict[str, Any]:
            out = dict(bins)
            out["n"] = out.get("n", 0) + amount
            return out

        rec = self.run(self.store.cas(key, bump))
        expected = bump(old)
        expected_gen = self.model[key][0] + 1 if key in self.model else 1
        assert rec.generation == expected_gen
        assert same(dict(rec.bins), expected), f"cas wrote {rec.bins}, expected {expected}"
        self.model[key] = (expected_gen, expected)

    # --- reads --------------------------------------------------------------------------------------

    @rule(key=keys, scribble=st.booleans())
    def get(self, key: Key, scribble: bool) -> None:
        rec = self.run(self.store.get(key))
        self.check_record(key, rec)
        if scribble and rec is not None:
            # the returned bins belong to the caller: changing them must not change the store
            for value in rec.bins.values():
                if isinstance(value, list | dict):
                    value.clear()
            rec.bins["scribbled"] = True
            self.check_record(key, self.run(self.store.get(key)))

    @rule(batch=st.lists(keys, min_size=0, max_size=6))
    def get_many(self, batch: list[Key]) -> None:
        recs = self.run(self.store.get_many(batch))
        assert len(recs) == len(batch)
        for key, rec in zip(batch, recs, strict=True):
            self.check_record(key, rec)

    @rule(where=st.sampled_from(SETS))
    def scan(self, where: tuple[str, str]) -> None:
        async def collect() -> list[Any]:
            return [rec async for rec in self.store.scan(*where)]

        recs = self.run(collect())
        got = {rec.key: rec for rec in recs}
        assert len(got) == len(recs), "scan returned a record twice"
        expected = {k for k in self.model if (k.namespace, k.set) == where}
        assert set(got) == expected, (
            f"scan {where}: {sorted(map(str, got))}, model {sorted(map(str, expected))}"
        )
        for key, rec in got.items():
            self.check_record(key, rec)

    @invariant()
    def everything_matches_after_each_step(self) -> None:
        recs = self.run(self.store.get_many(KEYS))
        for key, rec in zip(KEYS, recs, strict=True):
            self.check_record(key, rec)


SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class MemoryStoreModel(StoreModel):
    url_template = "memory://"


class FileStoreModel(StoreModel):
    """Adds what only a durable store has: close + reopen (recovery) and compaction."""

    @rule()
    def reopen(self) -> None:
        self.run(self.store.close())
        self.store = self.run(open_store(self.url))
        self.verify_engine()

    @rule(force=st.booleans())
    def compact(self, force: bool) -> None:
        self.run(self.store.compact(force=force))
        self.verify_engine()

    def verify_engine(self) -> None:
        """The engine's own index-vs-log checker (``datastore verify``) must find nothing wrong."""
        report = self.run(self.store.verify())
        assert report["ok"], report


class FlushStoreModel(FileStoreModel):
    url_template = "file://{dir}?durability=flush&segment_bytes=4096"  # small: segments seal and compact


class FsyncStoreModel(FileStoreModel):
    url_template = "file://{dir}?durability=fsync&segment_bytes=4096"


TestMemoryStoreModel = MemoryStoreModel.TestCase
TestMemoryStoreModel.settings = SETTINGS
TestFlushStoreModel = FlushStoreModel.TestCase
TestFlushStoreModel.settings = SETTINGS
TestFsyncStoreModel = FsyncStoreModel.TestCase
TestFsyncStoreModel.settings = settings(SETTINGS, max_examples=60)
