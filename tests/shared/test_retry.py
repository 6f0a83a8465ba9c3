"""Backoff after refused logins, and the ``retry_after`` field of ``error``."""

from __future__ import annotations

import random

import pytest

from shared import messages as m
from shared.codec import decode_server, encode
from shared.errors import ProtocolError
from shared.retry import MAX_BACKOFF, refusal_delay


def test_only_refusals_are_retried() -> None:
    assert refusal_delay("auth_failed", 5.0, 0) is None
    assert refusal_delay("internal", None, 3) is None


def test_retry_after_is_honoured_with_upward_jitter() -> None:
    rng = random.Random(1)
    delays = [refusal_delay("server_full", 4.0, i, rng) for i in range(200)]
    assert all(4.0 <= d <= 6.0 for d in delays)            # never earlier than asked, at most 1.5 x
    assert max(delays) - min(delays) > 1.0                  # spread out, not one wave
    assert refusal_delay("busy", 10_000.0, 0, rng) <= MAX_BACKOFF * 1.5


def test_without_retry_after_the_backoff_grows_and_is_capped() -> None:
    rng = random.Random(2)
    first = [refusal_delay("busy", None, 0, rng) for _ in range(50)]
    late = [refusal_delay("busy", None, 8, rng) for _ in range(50)]
    assert max(first) <= 0.75 and min(late) >= 0.5 * MAX_BACKOFF and max(late) <= 1.5 * MAX_BACKOFF


def test_error_carries_an_optional_non_negative_retry_after() -> None:
    err = decode_server(encode(m.Error(code="busy", message="later", retry_after=2.5, rid=4)))
    assert err.retry_after == 2.5 and err.rid == 4
    assert decode_server(encode(m.Error(code="internal", message="x"))).retry_after is None
    with pytest.raises(ProtocolError):
        decode_server(b'\x84\xa1t\xa5error\xa4code\xa4busy\xa7message\xa1x\xabretry_after\xff')
