"""Where each partition's aggregation stands: the offset of the next record to aggregate.

The worker keeps this position itself, in the same checkpoint as the window state, instead of
trusting the order in which Faust delivers records. Around a rebalance Faust resumes fetching
before it seeks to the committed offsets, delivers some records twice, drops others from its
queues, and counts an offset jump as acknowledged; each of these lost or doubled calls now and
then. Against a position saved with the state, every record is judged on arrival: the next one
is aggregated, an earlier one is already in the state and skipped, and a later one means records
are missing: the worker reads them itself (:mod:`promptprof_processor.runtime.gaps`) before it goes
on.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    """What to do with a record, given the partition's position."""

    TAKE = "take"  # the next record: aggregate it
    SEEN = "seen"  # before the position: already in the state
    AHEAD = "ahead"  # after the position: records before it are missing


class PartitionCursors:
    """The next offset to aggregate of every partition the worker holds state for."""

    def __init__(self) -> None:
        """No partition held."""
        self._next: dict[int, int] = {}

    def start(self, partition: int, next_offset: int) -> None:
        """Hold ``partition`` from ``next_offset``."""
        self._next[partition] = next_offset

    def forget(self, partition: int) -> None:
        """Stop holding a revoked partition."""
        self._next.pop(partition, None)

    def next_offset(self, partition: int) -> int:
        """The offset of the partition's next record to aggregate."""
        return self._next[partition]

    def judge(self, partition: int, offset: int) -> Verdict:
        """Whether the record at ``offset`` is the next one, an old one or one too far."""
        expected = self._next[partition]
        if offset == expected:
            return Verdict.TAKE
        return Verdict.SEEN if offset < expected else Verdict.AHEAD

    def taken(self, partition: int, offset: int) -> None:
        """The record at ``offset`` was aggregated."""
        self._next[partition] = offset + 1

    def skip_to(self, partition: int, next_offset: int) -> int:
        """Move the position forward to ``next_offset`` (the log no longer holds the records
        before it); return how many offsets were skipped."""
        skipped = max(next_offset - self._next[partition], 0)
        self._next[partition] += skipped
        return skipped
