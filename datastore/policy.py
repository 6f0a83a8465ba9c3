"""Pure write rules shared by every backend: no I/O, no clock, no store state.

- ``check_write(exists, generation, current)``: the exists/generation matrix. ``current`` is the stored
  generation, or None when the record is absent (an absent record counts as generation 0, so
  ``generation=0`` means "only if absent"). The exists rule is checked before the generation rule.

  ============  ==========================  =========================
  exists        absent                      present
  ============  ==========================  =========================
  upsert        create                      merge bins
  create        create                      RecordExistsError
  update        RecordNotFoundError         merge bins
  replace       RecordNotFoundError         replace all bins
  ============  ==========================  =========================

  then, if ``generation`` is not None and differs from ``current or 0``: GenerationError.
- ``validate_bins`` / ``validate_value``: what a bin may hold (str names; int in 64-bit range, float, str,
  bytes, bool, None, list/tuple, dict with str keys).
- ``merge_bins``: put semantics (a None value removes the bin).
- ``apply_ops``: operate semantics.
- ``expiry``: TTL argument to an absolute expiry time.
"""

from __future__ import annotations

import copy
from typing import Any

from . import ops as _ops
from .errors import (
    GenerationError,
    InvalidBinError,
    RecordExistsError,
    RecordNotFoundError,
)

EXISTS_POLICIES = ("upsert", "create", "update", "replace")
TTL_NEVER = -1  # same as ttl=None: the record never expires
TTL_KEEP = -2  # keep the record's current expiry (used by cas)
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
MAX_DEPTH = 32
_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})


def check_write(exists: str, generation: int | None, current: int | None) -> None:
    """Raise the error the (exists, generation) policy demands for a record at generation ``current``."""
    if current is None:
        if exists == "update" or exists == "replace":
            raise RecordNotFoundError(f"exists={exists!r} but the record is absent")
        if exists != "upsert" and exists != "create":
            raise InvalidBinError(f"exists must be one of {EXISTS_POLICIES}, got {exists!r}")
        if generation is not None and generation != 0:
            raise GenerationError(f"expected generation {generation}, record is absent")
        return
    if exists == "create":
        raise RecordExistsError(f"exists='create' but the record exists (generation {current})")
    if exists not in EXISTS_POLICIES:
        raise InvalidBinError(f"exists must be one of {EXISTS_POLICIES}, got {exists!r}")
    if generation is not None and generation != current:
        raise GenerationError(f"expected generation {generation}, record is at {current}")


def validate_value(value: Any, depth: int = 0) -> bool:
    """Raise InvalidBinError if value cannot be stored; return True if it is a scalar (immutable)."""
    t = type(value)
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidBinError(f"int out of 64-bit range: {value}")
        return True
    if t in _SCALARS:
        return True
    if depth >= MAX_DEPTH:
        raise InvalidBinError(f"value nested deeper than {MAX_DEPTH} levels")
    if t is list or t is tuple:
        for item in value:
            validate_value(item, depth + 1)
        return False
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidBinError(f"map keys must be str, got {type(k).__name__} ({k!r})")
            validate_value(v, depth + 1)
        return False
    raise InvalidBinError(
        f"bin values must be int, float, str, bytes, bool, None, list or dict, got {t.__name__}")


def validate_bins(bins: Any) -> bool:
    """Check a bins dict given to put; return True if every value is a scalar (safe to cache and share)."""
    if type(bins) is not dict:
        raise InvalidBinError(f"bins must be a dict, got {type(bins).__name__}")
    flat = True
    for name, value in bins.items():
        if type(name) is not str or not name:
            raise InvalidBinError(f"bin names must be non-empty str, got {name!r}")
        t = type(value)
        if t is int:
            if not INT_MIN <= value <= INT_MAX:
                raise InvalidBinError(f"bin {name!r}: int out of 64-bit range: {value}")
        elif t not in _SCALARS:
            try:
                validate_value(value, 1)
            except InvalidBinError as exc:
                raise InvalidBinError(f"bin {name!r}: {exc}") from None
            flat = False
    return flat


def merge_bins(current: dict[str, Any] | None, bins: dict[str, Any], replace: bool) -> dict[str, Any]:
    """New bins after a put: merge into ``current`` (or replace it); None values remove bins."""
    if current is None or replace:
        return {k: v for k, v in bins.items() if v is not None}
    new = current.copy()
    for k, v in bins.items():
        if v is None:
            new.pop(k, None)
        else:
            new[k] = v
    return new


def is_flat(bins: dict[str, Any]) -> bool:
    """True if every bin value is immutable (the bins dict may be cached and shallow-copied)."""
    for v in bins.values():
        if type(v) not in _SCALARS:
            return False
    return True


def has_write(op_list: list[_ops.Op]) -> bool:
    """True if any op modifies the record."""
    return any(op.kind in _ops.WRITE_KINDS for op in op_list)


def validate_ops(op_list: Any) -> None:
    """Check an ops list before applying it (type and values)."""
    if type(op_list) not in (list, tuple) or not op_list:
        raise InvalidBinError("operate needs a non-empty list of ops")
    for op in op_list:
        if not isinstance(op, _ops.Op):
            raise InvalidBinError(f"not an op: {op!r} (build ops with datastore.ops)")
        if op.kind == _ops.PUT or op.kind == _ops.APPEND:
            validate_value(op.value)


def _snapshot(value: Any) -> Any:
    return value if type(value) in _SCALARS else copy.deepcopy(value)


def apply_ops(
    bins: dict[str, Any], op_list: list[_ops.Op], current_ttl: Any = TTL_KEEP
) -> tuple[dict[str, Any], dict[str, Any], bool, Any]:
    """Apply ops in order to ``bins`` (mutated: pass a private deep copy).

    Returns (bins, read_bins, wrote, ttl) where ttl is the last touch's TTL or ``current_ttl`` if no touch.
    """
    reads: dict[str, Any] = {}
    wrote = False
    ttl = current_ttl
    for op in op_list:
        kind, name = op.kind, op.bin
        if kind == _ops.READ:
            # copy containers: later ops of this call may mutate them in place
            if name is None:
                reads.update({k: _snapshot(v) for k, v in bins.items()})
            elif name in bins:
                reads[name] = _snapshot(bins[name])
            continue
        wrote = True
        if kind == _ops.INCR:
            old = bins.get(name, 0)
            if type(old) not in (int, float):
                raise InvalidBinError(f"incr on bin {name!r} holding {type(old).__name__}, not a number")
            new = old + op.value
            if type(new) is int and not INT_MIN <= new <= INT_MAX:
                raise InvalidBinError(f"incr on bin {name!r} overflows 64 bits")
            bins[name] = new
        elif kind == _ops.PUT:
            if op.value is None:
                bins.pop(name, None)
            else:
                bins[name] = op.value
        elif kind == _ops.APPEND:
            old = bins.get(name)
            if old is None:
                old = bins[name] = []
            elif type(old) is not list:
                raise InvalidBinError(f"append on bin {name!r} holding {type(old).__name__}, not a list")
            old.append(op.value)
            if op.max_len is not None and len(old) > op.max_len:
                del old[: len(old) - op.max_len]
        elif kind == _ops.REMOVE:
            bins.pop(name, None)
        elif kind == _ops.TOUCH:
            ttl = op.value
        else:
            raise InvalidBinError(f"unknown op kind {kind!r}")
    return bins, reads, wrote, ttl


def expiry(ttl: Any, now: float, current: float | None) -> float | None:
    """Absolute expiry for a write: None/0/-1 never, -2 keep ``current``, >0 now + ttl seconds."""
    if ttl is None:
        return None
    if type(ttl) not in (int, float):
        raise InvalidBinError(f"ttl must be seconds (int/float) or None, got {type(ttl).__name__}")
    if ttl > 0:
        return now + ttl
    if ttl == 0 or ttl == TTL_NEVER:
        return None
    if ttl == TTL_KEEP:
        return current
    raise InvalidBinError(f"ttl must be > 0, None, -1 (never) or -2 (keep), got {ttl}")


def creates_data(op_list: Any) -> bool:
    """True if the ops would give an absent record some data (put of a value, incr, append)."""
    for op in op_list:
        if op.kind == _ops.INCR or op.kind == _ops.APPEND or (op.kind == _ops.PUT and op.value is not None):
            return True
    return False
