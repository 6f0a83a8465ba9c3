"""Aerospike-style record store: embedded (log-structured, durable), in memory, or on Redis (Cluster).

Public API::

    from datastore import open_store, Key, Record, ops
    store = await open_store("file:///abs/dir?durability=fsync")   # or "memory://", "redis+cluster://..."
    gen = await store.put(Key("ns", "set", "id"), {"xp": 1})

See ``docs/datastore.md``.
"""

from . import ops
from .base import Store
from .errors import (
    CorruptLogError,
    DatastoreError,
    GenerationError,
    InvalidBinError,
    InvalidKeyError,
    InvalidURLError,
    RecordExistsError,
    RecordNotFoundError,
    RecordTooBigError,
    ReplicationTimeoutError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
)
from .keys import Key
from .record import Record
from .url import open_store

__all__ = [
    "CorruptLogError",
    "DatastoreError",
    "GenerationError",
    "InvalidBinError",
    "InvalidKeyError",
    "InvalidURLError",
    "Key",
    "Record",
    "RecordExistsError",
    "RecordNotFoundError",
    "RecordTooBigError",
    "ReplicationTimeoutError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "open_store",
    "ops",
]
