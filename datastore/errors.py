"""The datastore's one exception tree; every class carries a stable ``code`` string and ``in_doubt``.

::

    DatastoreError              code
    ├── GenerationError         "generation"         conditional write lost (generation mismatch)
    ├── RecordExistsError       "record_exists"      exists="create" on a present record
    ├── RecordNotFoundError     "record_not_found"   update/replace/read-only operate on absent record
    ├── RecordTooBigError       "record_too_big"     packed record larger than max_record_bytes
    ├── InvalidKeyError         "bad_key"            namespace/set/user_key of the wrong type or empty
    ├── InvalidBinError         "bad_bin"            bin name/value not storable, bad op, incr on non-number
    ├── InvalidURLError         "bad_url"            open_store() URL scheme or option not understood
    ├── StoreClosedError        "closed"             call on a closed store
    ├── StoreLockedError        "locked"             another process holds the store directory
    ├── StorageError            "io_error"           the disk or the Redis connection failed
    │   └── ReplicationTimeoutError                  written on the Redis master, but too few replicas
    │                           "replication_timeout" confirmed it in time (always in doubt)
    └── CorruptLogError         "corrupt_log"        bad frame inside the log (names file and offset)

``in_doubt`` (Aerospike's flag of the same name): True when the write the call was making may or may not
have been applied, e.g. the connection dropped after the command was sent, or the master applied it but
its replicas did not confirm. A caller that must not lose a write retries it (with an idempotency id of
its own, so a write that did land is not applied twice) and treats it as not acknowledged until a retry
succeeds. False for every error that proves the write did not happen (a rejected generation, a refused
connection, a bad bin) and for errors of reads.

Callers map ``code`` to their own error surface (the game server maps it to protocol codes in one place).
"""

from __future__ import annotations


class DatastoreError(Exception):
    """Base of every error raised by the datastore; ``in_doubt`` may be set per instance."""

    code = "datastore_error"
    in_doubt = False

    def __init__(self, message: str = "", *, in_doubt: bool | None = None) -> None:
        super().__init__(message)
        if in_doubt is not None:
            self.in_doubt = in_doubt


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
    """A store URL that cannot be used; the message is one line. ``option`` names the bad option, if any."""

    code = "bad_url"

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class StoreClosedError(DatastoreError):
    code = "closed"


class StoreLockedError(DatastoreError):
    code = "locked"


class StorageError(DatastoreError):
    """The storage under the store failed; ``in_doubt`` says whether the write may have happened."""

    code = "io_error"


class ReplicationTimeoutError(StorageError):
    """The Redis master applied the write, but fewer than ``required`` replicas confirmed it in time.

    The write is on the master and will usually reach the replicas; if the master fails first it is lost.
    ``confirmed`` of ``required`` replicas answered within the ``replica_timeout``.
    """

    code = "replication_timeout"
    in_doubt = True

    def __init__(self, message: str, *, confirmed: int, required: int) -> None:
        super().__init__(message)
        self.confirmed = confirmed
        self.required = required


class CorruptLogError(DatastoreError):
    """A frame inside the log failed its checks; ``path`` and ``offset`` say where."""

    code = "corrupt_log"

    def __init__(self, message: str, path: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
