"""``Key(namespace, set, user_key)``: validation, digest and partition of a record address.

The digest is xxh3_128 over the set name (length-prefixed) and the type-tagged user key, so ``1``, ``"1"``
and ``b"1"`` are three different records. The namespace is not in the digest (as in Aerospike): each
namespace has its own index. ``partition = digest % 4096`` is the unit of storage and, later, distribution.
"""

from __future__ import annotations

from typing import Any

import xxhash

from .errors import InvalidKeyError

N_PARTITIONS = 4096
MAX_NAME_BYTES = 255
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

_h128 = xxhash.xxh3_128_intdigest
_setattr = object.__setattr__


def _name(kind: str, value: Any) -> bytes:
    if type(value) is not str or not value:
        raise InvalidKeyError(f"{kind} must be a non-empty str, got {value!r}")
    raw = value.encode()
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidKeyError(f"{kind} longer than {MAX_NAME_BYTES} bytes: {value[:40]!r}...")
    return raw


def compute_digest(set_name: str, user_key: str | int | bytes) -> bytes:
    """The 16-byte digest of (set, user_key); raises InvalidKeyError for unsupported key types."""
    set_raw = _name("set", set_name)
    t = type(user_key)
    if t is str:
        tagged = b"s" + user_key.encode()  # type: ignore[union-attr]
    elif t is int:
        if not INT_MIN <= user_key <= INT_MAX:  # type: ignore[operator]
            raise InvalidKeyError(f"int user_key out of 64-bit range: {user_key}")
        tagged = b"i" + user_key.to_bytes(8, "big", signed=True)  # type: ignore[union-attr]
    elif t is bytes:
        tagged = b"b" + user_key  # type: ignore[operator]
    else:
        raise InvalidKeyError(f"user_key must be str, int or bytes (not bool), got {t.__name__}")
    return _h128(len(set_raw).to_bytes(2, "big") + set_raw + tagged).to_bytes(16, "big")


class Key:
    """Immutable record address. Build once and reuse: the digest is computed in the constructor."""

    __slots__ = ("digest", "namespace", "partition", "set", "user_key")

    namespace: str
    set: str
    user_key: str | int | bytes
    digest: bytes
    partition: int

    def __init__(self, namespace: str, set: str, user_key: str | int | bytes) -> None:
        _name("namespace", namespace)
        digest = compute_digest(set, user_key)
        _setattr(self, "namespace", namespace)
        _setattr(self, "set", set)
        _setattr(self, "user_key", user_key)
        _setattr(self, "digest", digest)
        _setattr(self, "partition", int.from_bytes(digest[14:], "big") % N_PARTITIONS)

    @classmethod
    def _trusted(cls, namespace: str, set_name: str, user_key: Any, digest: bytes) -> Key:
        """Rebuild a key read back from the store (already validated, digest known)."""
        self = object.__new__(cls)
        _setattr(self, "namespace", namespace)
        _setattr(self, "set", set_name)
        _setattr(self, "user_key", user_key)
        _setattr(self, "digest", digest)
        _setattr(self, "partition", int.from_bytes(digest[14:], "big") % N_PARTITIONS)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Key is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Key is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return self.digest == other.digest and self.namespace == other.namespace

    def __hash__(self) -> int:
        return hash((self.namespace, self.digest))

    def __repr__(self) -> str:
        return f"Key({self.namespace!r}, {self.set!r}, {self.user_key!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Key, (self.namespace, self.set, self.user_key))


def partition_of(digest: bytes) -> int:
    """Partition number of a digest (same as ``Key.partition``)."""
    return ((digest[14] & 15) << 8) | digest[15]  # == int.from_bytes(digest, "big") % 4096
