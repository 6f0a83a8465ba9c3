"""Secret hashing with salted scrypt; verification is constant-time.

Stored form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost can be raised later without breaking
existing characters.

scrypt is CPU-bound (~3-5 ms at the default cost) and releases the GIL, so every thread hashing competes
with the event loop thread for the core. In asyncio's default executor (cpu count + 4 threads) a login
storm left the loop one share in seven and websocket handshakes timed out. ``SecretHasher`` therefore runs
scrypt on its OWN few threads (``auth.hash_threads``, default 1) at a lower CPU priority (``auth.hash_nice``:
on Linux each hashing thread raises its own nice value, so the loop wins the core whenever it has work and
hashing uses what is left), behind the bounded, first-come-first-served ``admission.LoginQueue``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .admission import Gate

_DKLEN = 32


def hash_secret(secret: str, *, n: int = 2**11, r: int = 8, p: int = 1) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN,
                            maxmem=256 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches ``stored``; a malformed stored hash never matches."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        digest = hashlib.scrypt(secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def lower_thread_priority(nice: int) -> None:
    """Raise the CALLING thread's nice value to ``nice`` (Linux: nice is per thread); no-op elsewhere.

    Lowering priority needs no privilege; an already nicer thread is left alone.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:
        pass


class SecretHasher:
    """Hash / verify secrets on a small dedicated pool of low-priority threads, optionally behind a gate
    (``gate.run(job)``: the admission's bounded queue)."""

    def __init__(self, threads: int = 1, nice: int = 5, gate: Gate | None = None) -> None:
        self.threads = threads
        self.gate = gate
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="secret-hash",
                                        initializer=lower_thread_priority, initargs=(nice,))

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()

        def job() -> asyncio.Future[Any]:
            return loop.run_in_executor(self._pool, fn, *args)

        if self.gate is None:
            return await job()
        return await self.gate.run(job)

    async def hash(self, secret: str, *, n: int = 2**11, r: int = 8, p: int = 1) -> str:
        """Salted hash of a new secret; raises ``admission.Refused`` when the login queue is full."""
        return await self._run(lambda: hash_secret(secret, n=n, r=r, p=p))

    async def verify(self, secret: str, stored: str) -> bool:
        """``verify_secret`` off the loop; raises ``admission.Refused`` when the login queue is full."""
        return bool(await self._run(verify_secret, secret, stored))

    def close(self) -> None:
        """Stop the threads (queued jobs are dropped; call at shutdown)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
