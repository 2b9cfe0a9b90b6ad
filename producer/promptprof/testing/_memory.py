"""An exporter that keeps the events in memory: for the tests of a service that uses promptprof.

The events are built exactly as for Kafka (on the sender thread, by the same code), so a test
sees what the stream processor would receive::

    from promptprof.testing import InMemoryExporter

    def test_answer_is_profiled():
        exporter = InMemoryExporter.install()  # the process-wide profiler now exports here
        answer("What is promptprof?")
        (event,) = exporter.events()           # flushes first
        assert event["promptprof.prompt.id"] == "answer"
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from promptprof._profiler import Profiler, configure
from promptprof.export._base import Cycle, ExportStats


class InMemoryExporter:
    """Keeps every exported event as a dict (implements :class:`promptprof.export.Exporter`)."""

    durable = False

    def __init__(self) -> None:
        self.profiler: Profiler | None = None
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stats = ExportStats()

    @classmethod
    def install(cls, **producer: Any) -> InMemoryExporter:
        """Make the process-wide profiler (closing a previous one) export to a new instance;
        ``producer`` overrides producer settings (e.g. ``capture_text=True``)."""
        exporter = cls()
        exporter.profiler = configure(exporter=exporter, producer=producer)
        return exporter

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every call recorded so far is exported (or dropped, and counted)."""
        return self.profiler.flush(timeout) if self.profiler is not None else True

    def events(self, flush: bool = True) -> list[dict[str, Any]]:
        """The call events exported so far, oldest first (after a :meth:`flush`)."""
        return [e for e in self._all(flush) if e.get("kind") != "quality"]

    def quality_events(self, flush: bool = True) -> list[dict[str, Any]]:
        """The quality events (scores attached after a call ended) exported so far."""
        return [e for e in self._all(flush) if e.get("kind") == "quality"]

    def clear(self) -> None:
        """Forget the events kept so far."""
        with self._lock:
            self._events.clear()

    def _all(self, flush: bool) -> list[dict[str, Any]]:
        if flush:
            self.flush()
        with self._lock:
            return list(self._events)

    # -- the exporter protocol ----------------------------------------------------------------

    def start(self, stats: ExportStats) -> None:
        """Count into ``stats``."""
        self._stats = stats

    def ready(self) -> bool:
        """Always."""
        return True

    async def export(self, cycle: Cycle) -> None:
        """Keep the events."""
        with self._lock:
            self._events.extend(cycle.events)
        self._stats.sent_events += len(cycle)

    async def progress(self, timeout: float) -> None:
        """Nothing to move on: wait ``timeout``."""
        await asyncio.sleep(timeout)

    async def shutdown(self, deadline: float) -> None:
        """Nothing to release."""
