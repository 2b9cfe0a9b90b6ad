"""Which offsets of a partition this worker has aggregated, as a few ranges.

After a rebalance or its table recovery, Faust may deliver some records, then seek back to the
committed offsets and deliver from there again: records already aggregated come twice, and
records fetched but dropped before delivery may come for the first time. Skipping every offset
up to the highest one seen would skip the second kind for good; skipping exactly the offsets
aggregated skips only the first. Offsets are mostly aggregated in order, so the set is one
range, rarely a few.
"""

from __future__ import annotations

import bisect


class HandledOffsets:
    """A set of offsets kept as sorted, disjoint, non-adjacent ``[start, end)`` ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        """An empty set."""
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __contains__(self, offset: int) -> bool:
        """Whether ``offset`` was added."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    def add(self, offset: int) -> None:
        """Add ``offset`` (adding one twice changes nothing)."""
        starts, ends = self._starts, self._ends
        if ends and ends[-1] == offset:  # the usual case: the next offset
            ends[-1] = offset + 1
        elif offset not in self:
            i = bisect.bisect_right(starts, offset)
            starts.insert(i, offset)
            ends.insert(i, offset + 1)
            self._merge(i)

    def _merge(self, i: int) -> None:
        starts, ends = self._starts, self._ends
        if i + 1 < len(starts) and ends[i] == starts[i + 1]:
            ends[i] = ends.pop(i + 1)
            del starts[i + 1]
        if i > 0 and ends[i - 1] == starts[i]:
            ends[i - 1] = ends.pop(i)
            del starts[i]

    def ranges(self) -> list[tuple[int, int]]:
        """The ``[start, end)`` ranges, in order."""
        return list(zip(self._starts, self._ends, strict=True))
