"""SeqTracker: the client's bookkeeping of seq numbers (duplicates, gaps, replayed, announced gaps)."""

from __future__ import annotations

from shared.seq import SeqTracker


def test_consecutive_numbers_are_accepted_and_last_follows() -> None:
    t = SeqTracker()
    assert [t.accept(n) for n in (1, 2, 3)] == [True, True, True]
    assert t.last == 3 and t.failures == 0


def test_a_duplicate_is_refused_and_counted() -> None:
    t = SeqTracker()
    t.accept(1)
    t.accept(2)
    assert t.accept(2) is False and t.accept(1) is False
    assert t.duplicates == 2 and t.last == 2 and t.failures == 2


def test_an_unannounced_gap_is_counted_with_what_it_skipped() -> None:
    t = SeqTracker()
    t.accept(1)
    assert t.accept(5) is True
    assert t.gaps == 1 and t.missing == 3 and t.last == 5


def test_recovered_false_announces_one_gap() -> None:
    t = SeqTracker()
    t.accept(1)
    t.resumed(False, 0)
    assert t.accept(9) and t.gaps == 0 and t.unrecovered == 1
    assert t.accept(11) and t.gaps == 1          # only the next number was announced


def test_recovered_true_counts_the_replayed_numbers() -> None:
    t = SeqTracker()
    t.accept(1)
    t.resumed(True, 2)
    for n in (2, 3, 4):
        t.accept(n)
    assert t.replayed == 2 and t.failures == 0


def test_reset_starts_a_new_session_and_keeps_the_counters() -> None:
    t = SeqTracker()
    t.accept(1)
    t.accept(1)
    t.reset()
    assert t.last == 0 and t.accept(1) and t.duplicates == 1
    assert "duplicates 1" in t.summary()
