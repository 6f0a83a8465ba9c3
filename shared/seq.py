"""Client-side check of a session's ``seq`` numbers: what to resume from, and whether anything went wrong.

Every server message but ``tick``, ``pong``, ``welcome``, ``joined``, ``bye`` and ``redirect`` carries
``seq``: 1, 2, 3 ... per session, across resumes. A client keeps the last one (``last``), sends it in
``resume``, and should see each number once and none skipped, except right after a ``welcome`` with
``recovered: false``, which announces a gap. ``SeqTracker`` is that bookkeeping, without I/O, shared by
``GameClient``, the bots and the locust user:

- ``accept(seq)``: False for a duplicate (drop the message); counts unannounced gaps;
- ``resumed(recovered, replay)`` at the ``welcome`` of a resume with ``seq``: the next ``replay`` numbers are
  counted as replayed; ``recovered: false`` lets the next number be anything above ``last``;
- ``failures``: gaps plus duplicates, which the server promises never to cause.
"""

from __future__ import annotations


class SeqTracker:
    __slots__ = ("_announced", "_replay_until", "duplicates", "gaps", "last", "missing", "replayed",
                 "unrecovered")

    def __init__(self) -> None:
        self.last = 0            # highest seq accepted: what to send in ``resume``
        self.replayed = 0        # messages the server replayed after a resume
        self.gaps = 0            # numbers skipped without a recovered: false before them
        self.missing = 0         # how many numbers those gaps skipped
        self.duplicates = 0      # numbers seen again (dropped)
        self.unrecovered = 0     # resumes answered recovered: false (announced gaps)
        self._announced = False
        self._replay_until = 0

    @property
    def failures(self) -> int:
        return self.gaps + self.duplicates

    def reset(self) -> None:
        """A new session (login): numbering starts again at 1; the counters keep adding up."""
        self.last = 0
        self._announced = False
        self._replay_until = 0

    def resumed(self, recovered: bool | None, replay: int = 0) -> None:
        """The ``welcome`` of a resume sent with ``seq=last``: ``recovered`` and ``replay`` as it says
        (None: the server did not answer about recovery, so nothing can be checked across the gap)."""
        if recovered:
            self._replay_until = self.last + replay
            return
        if recovered is False:
            self.unrecovered += 1
        self._announced = True

    def accept(self, seq: int) -> bool:
        """A message numbered ``seq`` arrived: True to deliver it, False for a duplicate."""
        last = self.last
        if seq <= last:
            self.duplicates += 1
            return False
        if seq != last + 1 and not self._announced:
            self.gaps += 1
            self.missing += seq - last - 1
        self._announced = False
        if seq <= self._replay_until:
            self.replayed += 1
        self.last = seq
        return True

    def summary(self) -> str:
        return (f"last seq {self.last}, replayed {self.replayed}, unrecovered resumes {self.unrecovered}, "
                f"gaps {self.gaps} ({self.missing} missing), duplicates {self.duplicates}")
