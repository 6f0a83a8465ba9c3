"""Player behaviour profiles shared by the locust users and the capacity script, plus stable credentials."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import socket
import zlib
from dataclasses import dataclass

# Not a secret worth protecting: load-test characters only need a stable, per-name secret so that reruns
# log back into the same characters instead of failing with auth_failed.
LOADTEST_BASE_SECRET = b"gamebackend-loadtest-v1"


_counter = itertools.count(1)
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def unique_name(host: str | None = None, pid: int | None = None) -> str:
    """`l<host tag><pid>_<n>` in base 36: unique per user across worker processes and machines, and at most
    16 characters (protocol names: 3 to 16 of [A-Za-z0-9_])."""
    tag = _b36(zlib.crc32((host or socket.gethostname()).encode()) % 1296).rjust(2, "0")
    return f"l{tag}{_b36(os.getpid() if pid is None else pid)}_{_b36(next(_counter))}"[:16]


def secret_for(name: str, base: bytes = LOADTEST_BASE_SECRET) -> str:
    """Deterministic 32-character secret for a load-test character name (protocol: 16 to 128 chars)."""
    return hmac.new(base, name.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Profile:
    """How one simulated player behaves.

    walk_fraction: share of time spent walking (the rest idles, sending only pings);
    move_hz: (low, high) move rate while walking, drawn per walking phase;
    phase_seconds: (low, high) length of a walking or idle phase;
    attack: attack mobs within range (at most once per cooldown);
    hunt_fraction: share of walking phases that head for a mob rather than a random point.
    """

    name: str
    walk_fraction: float
    move_hz: tuple[float, float]
    phase_seconds: tuple[float, float]
    attack: bool
    hunt_fraction: float
    chat_every: float
    ping_every: float
    me_every: float
    top_every: float


PROFILES: dict[str, Profile] = {
    "busy": Profile(
        name="busy",
        walk_fraction=1.0,
        move_hz=(10.0, 10.0),
        phase_seconds=(5.0, 15.0),
        attack=True,
        hunt_fraction=0.8,
        chat_every=20.0,
        ping_every=5.0,
        me_every=30.0,
        top_every=30.0,
    ),
    "casual": Profile(
        name="casual",
        walk_fraction=0.5,
        move_hz=(2.0, 4.0),
        phase_seconds=(5.0, 15.0),
        attack=True,
        hunt_fraction=0.3,
        chat_every=60.0,
        ping_every=10.0,
        me_every=60.0,
        top_every=60.0,
    ),
}


def select_profile(opts: object) -> str:
    """--game-profile, else locust's --profile when it names a profile, else GAME_PROFILE, else busy."""
    for value in (getattr(opts, "game_profile", None), getattr(opts, "profile", None),
                  os.environ.get("GAME_PROFILE")):
        if value in PROFILES:
            return str(value)
    return "busy"
