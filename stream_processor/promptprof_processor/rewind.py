"""A Faust consumer that rewinds stream partitions without a committed offset to their start.

Once table recovery is done, Faust seeks every stream partition back to its committed offset:
records fetched during recovery were dropped (the agents' queues are cleared when the flow
resumes) and are fetched again from there. A partition without a committed offset is left where
the fetcher got to, so the records fetched during recovery are skipped for good. Every partition
is in that state after a broker that lost its consumer groups (a memory-only broker restarted),
and so is a new group's partition until its first commit. Seeking them to their first offset is
what ``consumer_auto_offset_reset="earliest"`` asks for. Their local committed offset goes too:
one left from the lost log would make Faust ignore the acks of every lower offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka

log = structlog.get_logger("promptprof.worker")


class RewindingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]  # Faust is untyped here
    """Faust's aiokafka consumer, seeking partitions that have no commit to their beginning."""

    async def seek_to_committed(self) -> Mapping[Any, int | None]:
        """Seek to the committed offsets, and to the first offset where there is none."""
        committed: Mapping[Any, int | None] = await super().seek_to_committed()
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
