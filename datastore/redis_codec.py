"""Records <-> Redis hashes, and API calls <-> the arguments and replies of the Lua scripts. Pure: no I/O.

Layout: each record is one hash at ``r:<ns>:<set>:{<ns>:<partition>}:<tag><user key>``. Namespace and set
are percent-encoded (no ``:``, braces or glob characters survive), the hash tag carries the partition so
Redis Cluster spreads the 4096 partitions of a namespace over its slots, and the user key is its type tag
(``s`` str, ``i`` int, ``b`` bytes) followed by its UTF-8 / decimal / raw bytes, so ``scan`` gives back the
original key. Fields: one per bin (int as decimal string so ``HINCRBY`` works, float ``f`` + repr, others
``m`` + msgpack), plus reserved ``\\xffg`` (generation) and ``\\xffe`` (expiry, Unix microseconds) whose
0xFF byte no UTF-8 bin name can hold: every bin name the embedded store takes works here too.

Script arguments (see ``datastore.redis_lua``): ``put`` and ``operate`` pack all of theirs into one
msgpack string. Replies that report a rule failure become the embedded store's very error (class, code,
message) through the same ``policy`` functions. Record size is the sum of bin name and encoded value
lengths (close to, not byte-equal with, the embedded store's packed size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import msgpack

from . import ops as _ops
from .errors import InvalidBinError, RecordNotFoundError, RecordTooBigError, StorageError
from .keys import Key
from .policy import EXISTS_POLICIES, INT_MAX, INT_MIN, TTL_KEEP, check_write, expiry, validate_bins
from .record import Record

GEN, EXP = b"\xffg", b"\xffe"
_MODE = {"upsert": "u", "create": "c", "update": "p", "replace": "r"}
_OP_KIND = {_ops.PUT: b"p", _ops.INCR: b"i", _ops.APPEND: b"a", _ops.REMOVE: b"x", _ops.READ: b"r",
            _ops.TOUCH: b"t"}
_packb = msgpack.Packer(use_bin_type=True).pack
# script arguments: raw strings only (Redis' cmsgpack has no bin type): bytes and str become Lua strings
_pack_args = msgpack.Packer(use_bin_type=False).pack
_unpackb = msgpack.unpackb


# --- values ----------------------------------------------------------------------------------------


def encode_value(v: Any) -> bytes:
    """A bin value as stored in its hash field (None is never stored: it removes the bin)."""
    t = type(v)
    if t is int:
        return b"%d" % v
    if t is float:
        return b"f" + repr(v).encode()
    return b"m" + _packb(v)


def decode_value(b: bytes) -> Any:
    """Inverse of ``encode_value``."""
    c = b[0]
    if c == 109:  # m
        return _unpackb(b[1:])
    if c == 102:  # f
        return float(b[1:])
    return int(b)


def ttl_spec(ttl: Any) -> bytes:
    """Validate a TTL argument (same rules and errors as the embedded store) and encode it for Lua."""
    if ttl is None:
        return b""
    expiry(ttl, 0.0, None)  # raises InvalidBinError on a bad TTL
    if ttl > 0:
        return repr(float(ttl)).encode()
    return b"K" if ttl == TTL_KEEP else b""


def record_from_hash(key: Key, h: dict[bytes, bytes], now: float) -> Record | None:
    """A Record from an HGETALL reply (None if absent, not a record, or expired). Consumes ``h``."""
    if not h:
        return None
    gen = h.pop(GEN, None)
    if gen is None:
        return None
    exp_raw = h.pop(EXP, None)
    exp = None
    if exp_raw is not None:
        exp = int(exp_raw) / 1e6
        if exp <= now:
            return None
    bins = {f.decode(): decode_value(v) for f, v in h.items()}
    return Record(key, bins, int(gen), exp)


# --- keys ------------------------------------------------------------------------------------------

NAME_CACHE_SIZE = 4096  # KeyCodec remembers the Redis key names of up to this many recent records


class KeyCodec:
    """Record key <-> Redis key name; the ``r:<ns>:<set>:`` prefix is cached per (namespace, set), and the
    names of recently used records by digest (a record is its namespace and digest, as ``Key.__eq__``)."""

    def __init__(self) -> None:
        self._prefix: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._names: dict[bytes, tuple[str, bytes]] = {}

    def prefixes(self, namespace: str, set_name: str) -> tuple[bytes, bytes]:
        """(``r:<ns>:<set>:``, ``{<ns>:``) for a namespace and set."""
        p = self._prefix.get((namespace, set_name))
        if p is None:
            ns, st = quote(namespace, safe="").encode(), quote(set_name, safe="").encode()
            p = self._prefix[(namespace, set_name)] = (b"r:%s:%s:" % (ns, st), b"{%s:" % ns)
        return p

    def name(self, key: Key) -> bytes:
        """The Redis key of a record."""
        hit = self._names.get(key.digest)
        if hit is not None and hit[0] == key.namespace:
            return hit[1]
        name = self._build(key)
        if len(self._names) >= NAME_CACHE_SIZE:
            self._names.clear()
        self._names[key.digest] = (key.namespace, name)
        return name

    def _build(self, key: Key) -> bytes:
        head, tag = self.prefixes(key.namespace, key.set)
        uk = key.user_key
        t = type(uk)
        if t is str:
            enc = b"s" + uk.encode()  # type: ignore[union-attr]
        elif t is int:
            enc = b"i%d" % uk
        else:
            enc = b"b" + uk  # type: ignore[operator]
        return b"%s%s%d}:%s" % (head, tag, key.partition, enc)

    @staticmethod
    def user_key(name: bytes) -> str | int | bytes:
        """The user key encoded at the end of a Redis key name."""
        enc = name.split(b":", 5)[5]
        t, raw = enc[:1], enc[1:]
        if t == b"s":
            return raw.decode()
        if t == b"i":
            return int(raw)
        return bytes(raw)

    @staticmethod
    def partition(name: bytes) -> int:
        """The partition in a Redis key name (ValueError / IndexError if it is not a record's name)."""
        return int(name.split(b":", 5)[4][:-1])

    def pattern(self, namespace: str, set_name: str) -> bytes:
        """SCAN MATCH pattern for every record of one set."""
        return self.prefixes(namespace, set_name)[0] + b"*"


# --- script arguments ------------------------------------------------------------------------------


def put_args(key: Key, bins: dict[str, Any], generation: int | None, exists: str, ttl: float | None,
             max_bytes: int) -> bytes:
    """The ``put`` script's one argument; raises the embedded store's errors for bad bins or size."""
    # validate and encode in one pass; anything unusual goes through validate_bins, which raises the
    # embedded store's error (or, for a valid container value, passes)
    if type(bins) is not dict:
        validate_bins(bins)
    sets: list[bytes] = []
    dels: list[bytes] = []
    size = 0
    checked = False
    for name, value in bins.items():
        if type(name) is not str or not name:
            validate_bins(bins)
        f = name.encode()
        t = type(value)
        if t is int:
            if not INT_MIN <= value <= INT_MAX:
                validate_bins(bins)
            v = b"%d" % value
        elif t is str or t is bytes or t is bool:
            v = b"m" + _packb(value)
        elif t is float:
            v = b"f" + repr(value).encode()
        elif value is None:
            dels.append(f)
            continue
        else:
            if not checked:
                validate_bins(bins)
                checked = True
            v = b"m" + _packb(value)
        size += len(f) + len(v)
        sets += (f, v)
    mode = _MODE.get(exists)
    if mode is None:
        raise InvalidBinError(f"exists must be one of {EXISTS_POLICIES}, got {exists!r}")
    spec = b"" if ttl is None else ttl_spec(ttl)
    if size > max_bytes:
        raise RecordTooBigError(f"record {key!r} packs to {size} bytes > max_record_bytes {max_bytes}")
    # seven msgpack objects one after the other (the script unpacks them as seven values): a fixarray
    # of them without its one header byte
    return _pack_args((mode, b"" if generation is None else b"%d" % generation, spec, max_bytes, size,
                       sets, dels))[1:]


def operate_args(op_list: Sequence[_ops.Op], generation: int | None, ttl: float | None, max_bytes: int,
                 creates: bool) -> bytes:
    """The ``operate`` script's one argument (ops already validated)."""
    args: list[Any] = [b"" if generation is None else b"%d" % generation,
                       b"" if ttl is None else ttl_spec(ttl), max_bytes, creates]
    for op in op_list:
        kind = op.kind
        value: Any = b""
        if kind == _ops.PUT:
            value = b"" if op.value is None else encode_value(op.value)
        elif kind == _ops.INCR:
            value = encode_value(op.value)
        elif kind == _ops.APPEND:
            value = _packb(op.value)
        elif kind == _ops.TOUCH:
            value = ttl_spec(op.value)
        elif kind not in _OP_KIND:
            raise InvalidBinError(f"unknown op kind {kind!r}")
        args += (_OP_KIND[kind], b"" if op.bin is None else op.bin.encode(), value,
                 b"" if op.max_len is None else b"%d" % op.max_len)
    return _pack_args(args)


def writes(op_list: Sequence[_ops.Op]) -> bool:
    """True when an ``operate`` changes the record (anything but reads)."""
    return any(op.kind != _ops.READ for op in op_list)


def generation_arg(generation: int | None) -> bytes:
    return b"" if generation is None else b"%d" % generation


# --- script replies --------------------------------------------------------------------------------


def operate_record(key: Key, reply: list[Any]) -> Record:
    """The Record of a successful ``operate`` reply ``{0, gen, exp_us or -1, name, value, ...}``."""
    exp = int(reply[2])
    reads = {reply[i].decode(): decode_value(reply[i + 1]) for i in range(3, len(reply), 2)}
    return Record(key, reads, int(reply[1]), None if exp < 0 else exp / 1e6)


def _bins_error(what: bytes, name: bytes, old: bytes) -> InvalidBinError:
    """The embedded store's InvalidBinError for a failed op (messages from ``policy.apply_ops``)."""
    b = name.decode()
    if what == b"overflow":
        return InvalidBinError(f"incr on bin {b!r} overflows 64 bits")
    kind = type(decode_value(old)).__name__ if old else "nothing"
    if what == b"list":
        return InvalidBinError(f"append on bin {b!r} holding {kind}, not a list")
    return InvalidBinError(f"incr on bin {b!r} holding {kind}, not a number")


def raise_failure(key: Key, reply: list[Any], exists: str, generation: int | None,
                  max_bytes: int) -> NoReturn:
    """Raise the error a script's failure reply stands for (nothing was written)."""
    status = reply[0]
    if status == 1:
        cur = int(reply[1])
        check_write(exists, generation, None if cur < 0 else cur)
        raise StorageError(f"redis script refused a write the policy allows ({reply!r})")
    if status == 2:
        raise RecordTooBigError(
            f"record {key!r} packs to {int(reply[1])} bytes > max_record_bytes {max_bytes}")
    if status == 3:
        raise RecordNotFoundError(f"operate on absent {key!r} without an op that creates data")
    if status == 4:
        raise _bins_error(reply[1], reply[2], reply[3])
    raise StorageError(f"unexpected redis script reply {reply!r}")
