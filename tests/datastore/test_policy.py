"""The pure write rules (``datastore.policy``) that every backend shares."""

from __future__ import annotations

from typing import Any

import pytest

from datastore import GenerationError, InvalidBinError, RecordExistsError, RecordNotFoundError, ops
from datastore.policy import (
    TTL_KEEP,
    apply_ops,
    check_write,
    creates_data,
    expiry,
    is_flat,
    merge_bins,
    validate_bins,
    validate_ops,
)

ABSENT, PRESENT = None, 4


@pytest.mark.parametrize(
    ("exists", "generation", "current", "error"),
    [
        ("upsert", None, ABSENT, None),
        ("upsert", 0, ABSENT, None),
        ("upsert", 3, ABSENT, GenerationError),
        ("create", None, ABSENT, None),
        ("create", 0, ABSENT, None),
        ("create", 1, ABSENT, GenerationError),
        ("update", None, ABSENT, RecordNotFoundError),
        ("update", 0, ABSENT, RecordNotFoundError),
        ("replace", None, ABSENT, RecordNotFoundError),
        ("replace", 5, ABSENT, RecordNotFoundError),
        ("upsert", None, PRESENT, None),
        ("upsert", 4, PRESENT, None),
        ("upsert", 3, PRESENT, GenerationError),
        ("create", None, PRESENT, RecordExistsError),
        ("create", 4, PRESENT, RecordExistsError),
        ("create", 3, PRESENT, RecordExistsError),
        ("update", None, PRESENT, None),
        ("update", 4, PRESENT, None),
        ("update", 0, PRESENT, GenerationError),
        ("replace", None, PRESENT, None),
        ("replace", 4, PRESENT, None),
        ("replace", 5, PRESENT, GenerationError),
        ("bogus", None, PRESENT, InvalidBinError),
        ("bogus", None, ABSENT, InvalidBinError),
    ],
)
def test_check_write_matrix(exists: str, generation: int | None, current: int | None, error: Any) -> None:
    if error is None:
        check_write(exists, generation, current)
    else:
        with pytest.raises(error):
            check_write(exists, generation, current)


def test_validate_bins_reports_flatness() -> None:
    assert validate_bins({"a": 1, "b": "x", "c": None, "d": b"", "e": 1.0, "f": False}) is True
    assert validate_bins({"a": [1]}) is False
    assert validate_bins({"a": {"b": 1}}) is False
    assert validate_bins({}) is True


def test_validate_bins_names_the_bad_bin() -> None:
    with pytest.raises(InvalidBinError, match="'score'"):
        validate_bins({"ok": 1, "score": {1, 2}})


def test_validate_bins_rejects_deep_nesting() -> None:
    value: Any = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(InvalidBinError, match="deeper"):
        validate_bins({"a": value})


def test_merge_and_replace() -> None:
    cur = {"a": 1, "b": 2}
    assert merge_bins(cur, {"b": None, "c": 3}, replace=False) == {"a": 1, "c": 3}
    assert cur == {"a": 1, "b": 2}  # not mutated
    assert merge_bins(cur, {"c": 3, "d": None}, replace=True) == {"c": 3}
    assert merge_bins(None, {"a": None, "b": 1}, replace=False) == {"b": 1}


def test_apply_ops_sequence() -> None:
    bins, reads, wrote, ttl = apply_ops(
        {"n": 1, "l": [1, 2, 3]},
        [ops.incr("n", 2), ops.read("n"), ops.append("l", 4, max_len=3), ops.remove("x"), ops.touch(30),
         ops.put("s", "v"), ops.put("n", None)],
    )
    assert bins == {"l": [2, 3, 4], "s": "v"}
    assert reads == {"n": 3}
    assert wrote is True and ttl == 30


def test_apply_ops_read_only_does_not_write() -> None:
    _, reads, wrote, ttl = apply_ops({"a": 1}, [ops.read("a"), ops.read("zz")], None)
    assert reads == {"a": 1} and wrote is False and ttl is None


def test_creates_data_and_validate_ops() -> None:
    assert creates_data([ops.incr("a")]) and creates_data([ops.append("a", 1)])
    assert creates_data([ops.put("a", 1)])
    assert not creates_data([ops.read("a"), ops.touch(1), ops.remove("a"), ops.put("a", None)])
    with pytest.raises(InvalidBinError):
        validate_ops([ops.put("a", object())])


def test_expiry_rules() -> None:
    assert expiry(None, 100.0, 5.0) is None
    assert expiry(0, 100.0, 5.0) is None
    assert expiry(-1, 100.0, 5.0) is None
    assert expiry(TTL_KEEP, 100.0, 5.0) == 5.0
    assert expiry(2.5, 100.0, None) == 102.5
    with pytest.raises(InvalidBinError):
        expiry(-7, 100.0, None)
    with pytest.raises(InvalidBinError):
        expiry("1", 100.0, None)


def test_is_flat() -> None:
    assert is_flat({"a": 1, "b": None})
    assert not is_flat({"a": (1,)})
