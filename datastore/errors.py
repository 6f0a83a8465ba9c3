"""The datastore's one exception tree; every class carries a stable ``code`` string.

::

    DatastoreError            code
    ├── GenerationError       "generation"        conditional write lost (generation mismatch)
    ├── RecordExistsError     "record_exists"     exists="create" on a present record
    ├── RecordNotFoundError   "record_not_found"  update/replace/read-only operate on absent record
    ├── RecordTooBigError     "record_too_big"    packed record larger than max_record_bytes
    ├── InvalidKeyError       "bad_key"           namespace/set/user_key of the wrong type or empty
    ├── InvalidBinError       "bad_bin"           bin name/value not storable, bad op, incr on non-number
    ├── InvalidURLError       "bad_url"           open_store() URL scheme or option not understood
    ├── StoreClosedError      "closed"            call on a closed store
    ├── StoreLockedError      "locked"            another process holds the store directory
    ├── StorageError          "io_error"          the disk failed (ENOSPC, EIO...); nothing was acknowledged
    └── CorruptLogError       "corrupt_log"       bad frame inside the log (message names file and offset)

Callers map ``code`` to their own error surface (the game server maps it to protocol codes in one place).
"""

from __future__ import annotations


class DatastoreError(Exception):
    """Base of every error raised by the datastore."""

    code = "datastore_error"


class GenerationError(DatastoreError):
    code = "generation"


class RecordExistsError(DatastoreError):
    code = "record_exists"


class RecordNotFoundError(DatastoreError):
    code = "record_not_found"


class RecordTooBigError(DatastoreError):
    code = "record_too_big"


class InvalidKeyError(DatastoreError, ValueError):
    code = "bad_key"


class InvalidBinError(DatastoreError, ValueError):
    code = "bad_bin"


class InvalidURLError(DatastoreError, ValueError):
    code = "bad_url"


class StoreClosedError(DatastoreError):
    code = "closed"


class StoreLockedError(DatastoreError):
    code = "locked"


class StorageError(DatastoreError):
    code = "io_error"


class CorruptLogError(DatastoreError):
    """A frame inside the log failed its checks; ``path`` and ``offset`` say where."""

    code = "corrupt_log"

    def __init__(self, message: str, path: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
