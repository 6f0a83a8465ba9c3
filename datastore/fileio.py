"""The ONE module that makes file syscalls for the datastore, so tests can inject disk faults.

Every open/write/fsync/truncate/rename/unlink/read of the engine goes through here. Fault injection::

    from datastore import fileio
    with fileio.fault("write", errno.ENOSPC):          # every write fails until the block exits
        ...
    fileio.set_fault("fsync", errno.EIO, count=1)     # the next fsync fails once
    fileio.clear_faults()

Kinds: ``open``, ``write``, ``fsync``, ``truncate``, ``rename``, ``unlink``, ``read``. Faults are global
to the process (the engine's fsync runs in a worker thread, so they must be). An injected fault raises
``OSError(errno, ...)`` exactly like the real call would; callers turn it into ``StorageError``.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import threading
from collections.abc import Iterator

KINDS = ("open", "write", "fsync", "truncate", "rename", "unlink", "read")
_faults: dict[str, list[int]] = {}  # kind -> [errno, remaining count (-1 = forever)]
_lock = threading.Lock()
_fdatasync = getattr(os, "fdatasync", os.fsync)


def set_fault(kind: str, errno: int = _errno.EIO, count: int | None = None) -> None:
    """Make the next ``count`` calls of ``kind`` (all of them when None) fail with ``errno``."""
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {KINDS}")
    with _lock:
        _faults[kind] = [errno, -1 if count is None else count]


def clear_faults(kind: str | None = None) -> None:
    """Remove one kind of fault, or all of them."""
    with _lock:
        if kind is None:
            _faults.clear()
        else:
            _faults.pop(kind, None)


@contextlib.contextmanager
def fault(kind: str, errno: int = _errno.EIO, count: int | None = None) -> Iterator[None]:
    """Context manager form of ``set_fault``; the fault is cleared on exit."""
    set_fault(kind, errno, count)
    try:
        yield
    finally:
        clear_faults(kind)


def _check(kind: str, what: str) -> None:
    if not _faults:
        return
    with _lock:
        spec = _faults.get(kind)
        if spec is None:
            return
        code = spec[0]
        if spec[1] > 0:
            spec[1] -= 1
            if spec[1] == 0:
                del _faults[kind]
    raise OSError(code, f"{os.strerror(code)} (injected {kind} fault)", what)


def open_append(path: str) -> int:
    """Open (create) a log file for appending; returns an fd."""
    _check("open", path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)


def open_new(path: str) -> int:
    """Create (truncate) a file for writing; returns an fd."""
    _check("open", path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)


def write(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of data (loops over short writes)."""
    if _faults:
        _check("write", f"fd {fd}")
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync(fd: int) -> None:
    """Flush a file's data to stable storage (fdatasync where available)."""
    if _faults:
        _check("fsync", f"fd {fd}")
    _fdatasync(fd)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (created/renamed/removed files) durable."""
    if _faults:
        _check("fsync", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate(fd: int, size: int) -> None:
    """Cut an open file back to size bytes."""
    _check("truncate", f"fd {fd}")
    os.ftruncate(fd, size)


def truncate_path(path: str, size: int) -> None:
    """Cut a file (by name) back to size bytes."""
    _check("truncate", path)
    os.truncate(path, size)


def close(fd: int) -> None:
    """Close an fd (never injected: closing must always be possible)."""
    os.close(fd)


def read_file(path: str) -> bytes:
    """The whole content of a file."""
    _check("read", path)
    with open(path, "rb") as f:
        return f.read()


def rename(src: str, dst: str) -> None:
    """Atomically rename src to dst."""
    _check("rename", src)
    os.replace(src, dst)


def unlink(path: str) -> None:
    """Remove a file (no error if already gone)."""
    _check("unlink", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def listdir(path: str) -> list[str]:
    """Names in a directory."""
    return os.listdir(path)


def makedirs(path: str) -> None:
    """Create a directory and its parents if missing."""
    os.makedirs(path, exist_ok=True)


def file_size(path: str) -> int:
    """Size of a file in bytes."""
    return os.stat(path).st_size


def lock(path: str) -> int:
    """Take an exclusive advisory lock on path (created if missing); returns the fd to keep open.

    Raises BlockingIOError if another process (or another open store in this process) holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def unlock(fd: int) -> None:
    """Release a lock taken with ``lock``."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
