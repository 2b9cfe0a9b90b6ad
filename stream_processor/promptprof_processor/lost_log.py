"""The one detector of a log the broker lost, for the worker and the sink alike.

Only a broker that lost its data (a memory-only broker restarted) has a log end below a
consumer's position; Tansu then answers fetches with no records and no error, so a consumer
would wait until the new log grew past the old offset. The end is the fetch's high watermark
(Tansu's ListOffsets answers the last batch's first offset + 1), and it must stay below the
position for ``grace_s``: a fetch answer now and then runs a record behind.
"""

from __future__ import annotations

import time
from collections.abc import Hashable


class LostLogs:
    """Tells, per partition, when a position has stayed past the log's end for ``grace_s``."""

    def __init__(self, grace_s: float = 2.0) -> None:
        """Report a partition whose position stays past the end for ``grace_s`` seconds."""
        self.grace_s = grace_s
        self._since: dict[Hashable, float] = {}

    def lost(
        self, partition: Hashable, position: int, end: int | None, now: float | None = None
    ) -> bool:
        """Whether ``partition``'s log was lost: its ``position`` has been past ``end`` (the
        high watermark, None when no fetch answered yet) for ``grace_s``. True once per loss."""
        now = time.monotonic() if now is None else now
        if end is None or position <= end:
            self._since.pop(partition, None)
            return False
        if now - self._since.setdefault(partition, now) < self.grace_s:
            return False
        del self._since[partition]
        return True
