"""Where a partition's aggregation stands: the offset of the next record to aggregate.

The worker keeps this position itself, saved in the same checkpoint as the window state, so each
record is aggregated exactly once whatever the consumer delivers twice after a restart or a
rebalance. Committed consumer offsets are only where fetching starts.
"""

from __future__ import annotations

import structlog

log = structlog.get_logger("promptprof.worker")


class Position:
    """The next offset to aggregate of one partition, and the offsets skipped so far."""

    def __init__(self, next_offset: int) -> None:
        """Start at ``next_offset``."""
        self.next_offset = next_offset
        self.skipped = 0

    def admit(self, offset: int) -> bool:
        """Whether the record at ``offset`` is to be aggregated now; moves past it if so.

        A record before the position is already in the state. A record past it means the log
        lacks the offsets between (deleted by retention or compaction, or lost by the broker):
        they are skipped, counted and logged.
        """
        if offset < self.next_offset:
            return False
        if offset > self.next_offset:
            self.skipped += offset - self.next_offset
            log.warning("promptprof.offsets_skipped", first=self.next_offset, next=offset,
                        reason="not in the log: deleted, compacted, or lost by the broker")
        self.next_offset = offset + 1
        return True
