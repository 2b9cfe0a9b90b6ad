"""A Faust consumer that rewinds stream partitions without a committed offset to their start.

Once table recovery is done, Faust seeks every stream partition back to its committed offset:
records fetched during recovery were dropped (the agents' queues are cleared when the flow
resumes) and are fetched again from there. A partition without a committed offset is left where
the fetcher got to, so the records fetched during recovery are skipped for good. Every partition
is in that state after a broker that lost its consumer groups (a memory-only broker restarted),
and so is a new group's partition until its first commit. Seeking them to their first offset is
what ``consumer_auto_offset_reset="earliest"`` asks for. Their local committed offset goes too:
one left from the lost log would make Faust ignore the acks of every lower offset.

A committed offset past the log's end is one from a log the broker lost (a stale commit that
reached the new broker). Tansu answers a fetch there with no records and no error, so the
partition would stall until the new log grew that long: such partitions start at the log's end
instead, and the agent reads what it has not aggregated before that itself
(:mod:`promptprof_processor.runtime.gaps`). Tansu answers a log's end as its last batch's first
offset
+ 1, so a commit inside the last batch also lands there; the agent skips the few records it
gets again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka

log = structlog.get_logger("promptprof.worker")


class RewindingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]  # Faust is untyped here
    """Faust's aiokafka consumer, seeking partitions that have no commit to their beginning,
    and those whose commit is past the log's end to the end."""

    async def seek_to_committed(self) -> Mapping[Any, int | None]:
        """Seek to the committed offsets, and to the first offset where there is none."""
        committed: dict[Any, int | None] = dict(await super().seek_to_committed())
        committed.update(await self._seek_past_the_end_to_the_end(committed))
        uncommitted = [
            tp for tp, offset in committed.items()
            if not offset and not self._is_changelog_tp(tp)
        ]
        if uncommitted:
            for tp in uncommitted:
                self._committed_offset.pop(tp, None)
            await self._thread.seek_to_beginning(*uncommitted)
            log.info("promptprof.partitions_rewound", reason="no committed offset",
                     partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in uncommitted))
        return committed

    async def _seek_past_the_end_to_the_end(
        self, committed: Mapping[Any, int | None]
    ) -> dict[Any, int]:
        tps = [tp for tp, offset in committed.items()
               if offset and not self._is_changelog_tp(tp)]
        ends = await self.highwaters(*tps) if tps else {}
        past = {tp: ends[tp] for tp in tps if tp in ends and (committed[tp] or 0) > ends[tp]}
        if past:
            await self.seek_wait(past)
            log.info("promptprof.commits_past_log_end",
                     partitions={f"{tp.topic}:{tp.partition}": (committed[tp], end)
                                 for tp, end in past.items()})
        return past
