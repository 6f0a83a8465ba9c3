"""Store URLs (``datastore.url``): every option of every scheme, and a one-line error for anything bad.

Pure parsing: nothing is opened (``open_store`` parses before it connects, shown at the end).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from datastore import InvalidURLError, open_store
from datastore.engine import Options
from datastore.url import BACKENDS, SCHEME_OPTIONS, RedisTarget, parse_store_url

REDIS_OPTIONS = {"max_record_bytes", "socket_timeout", "socket_connect_timeout", "max_connections",
                 "replicas", "replica_timeout"}
EXPECTED = {  # written out here, not read from the module: a dropped or added option fails this test
    "memory": {"max_record_bytes", "sweep_interval"},
    "file": {"durability", "max_record_bytes", "segment_bytes", "fsync_interval", "sweep_interval",
             "compact_interval", "compact_threshold"},
    "redis": REDIS_OPTIONS,
    "rediss": REDIS_OPTIONS,
    "redis+cluster": REDIS_OPTIONS,
}
BASE = {
    "memory": "memory://",
    "file": "file:///tmp/ds-url-test",
    "redis": "redis://127.0.0.1:6379/0",
    "rediss": "rediss://127.0.0.1:6380/1",
    "redis+cluster": "redis+cluster://127.0.0.1:7000",
}
GOOD: dict[str, tuple[str, Any]] = {  # option -> (value in the URL, parsed value)
    "max_record_bytes": ("1000", 1000),
    "sweep_interval": ("0.5", 0.5),
    "durability": ("flush", "flush"),
    "segment_bytes": ("8192", 8192),
    "fsync_interval": ("0.2", 0.2),
    "compact_interval": ("0", 0.0),
    "compact_threshold": ("0.25", 0.25),
    "socket_timeout": ("5", 5.0),
    "socket_connect_timeout": ("2.5", 2.5),
    "max_connections": ("8", 8),
    "replicas": ("1", 1),
    "replica_timeout": ("0.5", 0.5),
}
BAD: dict[str, list[str]] = {
    "max_record_bytes": ["0", "-1", "abc", "1.5", "", "1e3", " 5"],
    "sweep_interval": ["-0.1", "nan", "inf", "x"],
    "durability": ["sometimes", "FSYNC", ""],
    "segment_bytes": ["4095", "big"],
    "fsync_interval": ["0", "-1", "nan"],
    "compact_interval": ["-1", "often"],
    "compact_threshold": ["1.5", "-0.1", "half"],
    "socket_timeout": ["0", "abc", "inf"],
    "socket_connect_timeout": ["0", "-2"],
    "max_connections": ["0", "2.5", "many"],
    "replicas": ["-1", "one", "65", "1.0"],
    "replica_timeout": ["0", "-1", "nan"],
}


def url_with(scheme: str, query: str) -> str:
    return f"{BASE[scheme]}?{query}"


def bad_url_message(url: str) -> InvalidURLError:
    with pytest.raises(InvalidURLError) as info:
        parse_store_url(url)
    err = info.value
    assert err.code == "bad_url" and not err.in_doubt
    assert "\n" not in str(err) and len(str(err)) < 400, str(err)  # one line, no traceback material
    return err


def parsed_value(scheme: str, url: str, option: str) -> Any:
    parsed = parse_store_url(url)
    assert parsed.scheme == scheme
    if scheme in ("memory", "file"):
        return getattr(parsed.engine_options(), option)
    assert parsed.redis is not None
    return getattr(parsed.redis, option)


def test_tables_cover_every_backend_and_every_engine_option() -> None:
    assert set(BACKENDS) == set(SCHEME_OPTIONS) == set(EXPECTED)
    assert {s: set(o) for s, o in SCHEME_OPTIONS.items()} == EXPECTED
    assert EXPECTED["file"] == {f.name for f in dataclasses.fields(Options)}
    assert set(GOOD) == set(BAD) == set().union(*EXPECTED.values())


@pytest.mark.parametrize("scheme", list(EXPECTED))
@pytest.mark.parametrize("option", sorted(GOOD))
def test_each_scheme_takes_exactly_its_options(scheme: str, option: str) -> None:
    raw, want = GOOD[option]
    url = url_with(scheme, f"{option}={raw}")
    if option in EXPECTED[scheme]:
        got = parsed_value(scheme, url, option)
        assert got == want and type(got) is type(want)
    else:
        err = bad_url_message(url)
        assert repr(option) in str(err) and err.option == option
        assert f"known: {', '.join(sorted(EXPECTED[scheme]))}" in str(err)


@pytest.mark.parametrize(
    ("scheme", "option", "raw"),
    [(s, o, raw) for s, opts in EXPECTED.items() for o in sorted(opts) for raw in BAD[o]],
)
def test_every_bad_value_is_one_line_naming_option_and_value(scheme: str, option: str, raw: str) -> None:
    err = bad_url_message(url_with(scheme, f"{option}={raw}"))
    assert repr(option) in str(err) and repr(raw) in str(err) and err.option == option
    assert str(err).startswith("bad value")


def test_defaults_when_no_option_is_given() -> None:
    assert parse_store_url("memory://").engine_options() == Options()
    assert parse_store_url("file:///tmp/x").engine_options() == Options()
    target = parse_store_url("redis+cluster://10.0.0.1:7001").redis
    assert target == RedisTarget(cluster=True, host="10.0.0.1", port=7001)
    assert (target.replicas, target.replica_timeout, target.max_connections) == (0, 1.0, 256)


def test_unknown_option_names_it_and_lists_the_known_ones() -> None:
    err = bad_url_message("redis+cluster://127.0.0.1:7000?nosuch=1")
    assert str(err) == ("unknown store option 'nosuch' (value '1') for redis+cluster:// (known: "
                        "max_connections, max_record_bytes, replica_timeout, replicas, "
                        "socket_connect_timeout, socket_timeout)")


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("memory://?sweep_interval=1&sweep_interval=2", ["sweep_interval", "given twice", "'1'", "'2'"]),
        ("file:///tmp/x?durability", ["durability", "needs a value"]),
        ("redis://127.0.0.1:6379?replicas=1&socket_timeout=0.5&replica_timeout=1",
         ["socket_timeout", "0.5", "replica_timeout"]),
        ("redis://127.0.0.1:abc/0", ["port", "'abc'"]),
        ("redis://127.0.0.1:0/0", ["port", "'0'"]),
        ("redis://127.0.0.1:70000/0", ["port", "'70000'"]),
        ("redis://127.0.0.1:6379/x", ["database", "'x'"]),
        ("redis://127.0.0.1:6379/0/1", ["database", "'0/1'"]),
        ("redis+cluster://127.0.0.1:7000/2", ["database", "'2'", "only database 0"]),
        ("redis://127.0.0.1:6379/0#frag", ["fragment"]),
        ("memory://somewhere", ["memory://", "no host or path"]),
        ("file://", ["needs a directory"]),
        ("file://host/dir", ["'host'"]),
        ("ftp://x", ["'ftp'", "known: memory, file, redis, rediss, redis+cluster"]),
        ("nonsense", ["scheme://", "'nonsense'"]),
    ],
)
def test_bad_location_or_combination_is_one_line_naming_it(url: str, names: list[str]) -> None:
    err = bad_url_message(url)
    for name in names:
        assert name in str(err), (name, str(err))


@pytest.mark.parametrize(
    "url",
    ["redis://alice:s3cr3t@127.0.0.1:6379/0?nosuch=1", "redis://alice:s3cr3t@127.0.0.1:99999/0",
     "redis://:s3cr3t@127.0.0.1:6379/x", "rediss://u:s3cr3t@h:1/0#x"],
)
def test_a_password_never_appears_in_a_message(url: str) -> None:
    assert "s3cr3t" not in str(bad_url_message(url))


def test_credentials_database_and_tls_come_from_the_url() -> None:
    t = parse_store_url("rediss://al%40ice:p%3Aw@db.example:6390/3?replicas=2&replica_timeout=0.25").redis
    assert t is not None and not t.cluster and t.ssl
    assert (t.username, t.password, t.host, t.port, t.db) == ("al@ice", "p:w", "db.example", 6390, 3)
    assert (t.replicas, t.replica_timeout) == (2, 0.25)
    assert "p:w" not in repr(t)


async def test_open_store_rejects_a_bad_url_before_connecting() -> None:
    # nothing listens on port 1: a connection attempt would be a StorageError, not bad_url
    for url in ["redis+cluster://127.0.0.1:1?nosuch=1", "redis://127.0.0.1:1/0?replicas=x",
                "file:///tmp/ds-url-test?durability=never"]:
        with pytest.raises(InvalidURLError):
            await open_store(url)
