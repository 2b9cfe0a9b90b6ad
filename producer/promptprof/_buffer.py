"""The bounded, non-blocking buffer between the host's calls and the sender thread.

Two bounds: ``capacity`` items, and ``max_bytes`` for the buffer *and* what the sender holds
(envelopes pending or in flight, reported with :meth:`EventBuffer.hold`). A queued item counts
:data:`ITEM_BYTES`, plus its *extra* bytes (texts and labels of a :class:`~promptprof._record.Call`,
measured by the ``sizer`` given to the buffer).

Overflow policy: **drop newest**. A new item that does not fit is not stored and is counted with
its reason: ``dropped_full`` (``capacity`` items), ``dropped_bytes`` (``max_bytes``), or
``dropped_closed`` (after :meth:`EventBuffer.close`); what is already buffered is kept, so the
oldest measurements (those nearest to an outage's start) survive.

The hot path of an item without extra bytes (a decorated function's tuple) takes no lock: it
compares the length with an item bound kept at ``(max_bytes - held - extra) // ITEM_BYTES``
(and at most ``capacity``), and ``deque.append`` and ``next()`` on an ``itertools.count`` are
atomic under the GIL. The check and the append are two steps, so concurrent threads can overshoot
by at most one item each. Items with extra bytes, takes and :meth:`hold` update the bound under a
lock.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

ITEM_BYTES = 512  # a queued call, its texts and labels aside (tracemalloc: ~430 B for a Call)


def _read(counter: itertools.count[int]) -> int:
    """The number of times ``next`` was called on a counter, without advancing it."""
    return int(repr(counter)[6:-1])


def _no_extra(item: Any) -> int:
    return 0


class EventBuffer:
    """A bounded FIFO of recorded items with exact accepted and dropped counts."""

    def __init__(
        self, capacity: int, max_bytes: int | None = None,
        sizer: Callable[[Any], int] = _no_extra,
    ) -> None:
        self.max_items = capacity
        self.max_bytes = max_bytes if max_bytes is not None else sys.maxsize  # None: no bound
        self.capacity = capacity  # the item bound put() reads, lowered by the byte bound
        self._sizer = sizer
        self._items: deque[Any] = deque()
        self._extra = 0  # extra bytes of the queued items
        self._held = 0  # bytes the sender holds
        self._closed = False
        self._lock = threading.Lock()
        self._accepted = itertools.count()
        self._dropped_full = itertools.count()
        self._dropped_bytes = itertools.count()
        self._dropped_closed = itertools.count()
        self._rebound()

    def put(self, item: Any) -> bool:
        """Store ``item`` (of no extra bytes) unless a bound is reached; never blocks."""
        if len(self._items) >= self.capacity:
            self._refuse()
            return False
        self._items.append(item)
        next(self._accepted)
        return True

    def put_sized(self, item: Any) -> bool:
        """Store ``item``, counting its extra bytes, unless a bound is reached."""
        extra = self._sizer(item)
        with self._lock:
            room = self.max_bytes - self._held - self._extra - (len(self._items) + 1) * ITEM_BYTES
            if len(self._items) >= self.capacity or extra > room:
                self._refuse()
                return False
            self._extra += extra  # before the item is visible to take()
            self._items.append(item)
            next(self._accepted)
            self._rebound()
        return True

    def take(self, limit: int) -> list[Any]:
        """Remove and return up to ``limit`` items, oldest first. Their bytes stay counted, as
        held by the sender, until its next :meth:`hold`."""
        items = self._items
        pop = items.popleft
        taken = [pop() for _ in range(min(limit, len(items)))]
        extra = sum(map(self._sizer, taken)) if self._extra else 0  # 0: no item has any
        with self._lock:
            self._extra = max(0, self._extra - extra)
            self._held += len(taken) * ITEM_BYTES + extra
            self._rebound()
        return taken

    def hold(self, nbytes: int) -> None:
        """The sender now holds ``nbytes`` (counted against ``max_bytes``)."""
        with self._lock:
            self._held = nbytes
            self._rebound()

    def close(self) -> None:
        """Refuse every new item from now on (counted in ``dropped_closed``); what is buffered
        stays to be taken."""
        with self._lock:
            self._closed = True
            self.capacity = 0

    def discard_all(self) -> int:
        """Empty the buffer, returning how many items were discarded."""
        return len(self.take(len(self._items)))

    def held_bytes(self) -> int:
        """Bytes counted against ``max_bytes``: the queued items' and the sender's."""
        return len(self._items) * ITEM_BYTES + self._extra + self._held

    def __len__(self) -> int:
        return len(self._items)

    @property
    def accepted(self) -> int:
        """Items stored since the buffer was made."""
        return _read(self._accepted)

    @property
    def dropped_full(self) -> int:
        """Items refused because the buffer held ``capacity`` items."""
        return _read(self._dropped_full)

    @property
    def dropped_bytes(self) -> int:
        """Items refused because they would pass ``max_bytes``."""
        return _read(self._dropped_bytes)

    @property
    def dropped_closed(self) -> int:
        """Items refused because they came after :meth:`close`."""
        return _read(self._dropped_closed)

    def _rebound(self) -> None:
        """Recompute the item bound put() reads (the caller holds the lock, or is __init__)."""
        if self._closed:
            return
        room = (self.max_bytes - self._held - self._extra) // ITEM_BYTES
        self.capacity = max(0, min(self.max_items, room))

    def _refuse(self) -> None:
        """Count a refused item with its reason."""
        if self._closed:
            next(self._dropped_closed)
        elif len(self._items) >= self.max_items:
            next(self._dropped_full)
        else:
            next(self._dropped_bytes)
