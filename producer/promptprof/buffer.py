"""The bounded, non-blocking buffer between the host's calls and the sender thread.

Overflow policy: **drop newest**. When the buffer holds ``capacity`` items, a new item is not
stored and is counted in ``dropped_full``; once :meth:`EventBuffer.close` was called every new
item is refused and counted in ``dropped_closed``; what is already buffered is kept, so the oldest
measurements (those nearest to an outage's start) survive. ``deque.append`` and ``next()`` on an
``itertools.count`` are atomic under the GIL, so the hot path takes no lock; the length check and
the append are two steps, so concurrent threads can overshoot the capacity by at most one item
each, which keeps memory bounded.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any


def _read(counter: itertools.count[int]) -> int:
    """The number of times ``next`` was called on a counter, without advancing it."""
    return int(repr(counter)[6:-1])


class EventBuffer:
    """A bounded FIFO of recorded items with exact accepted and dropped counts."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._accepted = itertools.count()
        self._dropped_full = itertools.count()
        self._dropped_closed = itertools.count()
        self._refused = self._dropped_full  # where a refused item is counted

    def put(self, item: Any) -> bool:
        """Store ``item`` unless the buffer is full; never blocks."""
        if len(self._items) >= self.capacity:
            next(self._refused)
            return False
        self._items.append(item)
        next(self._accepted)
        return True

    def take(self, limit: int) -> list[Any]:
        """Remove and return up to ``limit`` items, oldest first."""
        items = self._items
        taken = []
        pop = items.popleft
        for _ in range(min(limit, len(items))):
            taken.append(pop())
        return taken

    def close(self) -> None:
        """Refuse every new item from now on (counted in ``dropped_closed``); what is buffered
        stays to be taken."""
        self._refused = self._dropped_closed
        self.capacity = 0

    def discard_all(self) -> int:
        """Empty the buffer, returning how many items were discarded."""
        discarded = 0
        while self._items:
            self._items.popleft()
            discarded += 1
        return discarded

    def __len__(self) -> int:
        return len(self._items)

    @property
    def accepted(self) -> int:
        """Items stored since the buffer was made."""
        return _read(self._accepted)

    @property
    def dropped_full(self) -> int:
        """Items refused because the buffer was full."""
        return _read(self._dropped_full)

    @property
    def dropped_closed(self) -> int:
        """Items refused because they came after :meth:`close`."""
        return _read(self._dropped_closed)
