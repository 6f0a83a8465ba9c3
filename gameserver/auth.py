"""Secret hashing with salted scrypt; verification is constant-time.

Stored form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost can be raised later without breaking
existing characters. scrypt is CPU-bound: the async wrappers run it in the default thread executor so a login
never stalls the event loop (and therefore never delays a tick).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os

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


async def hash_secret_async(secret: str, *, n: int = 2**11, r: int = 8, p: int = 1) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: hash_secret(secret, n=n, r=r, p=p))


async def verify_secret_async(secret: str, stored: str) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, verify_secret, secret, stored)
