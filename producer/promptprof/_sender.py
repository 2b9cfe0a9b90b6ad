"""The batching engine: its own thread and event loop, between the buffer and an exporter.

A cycle is due ``linger_ms`` after the previous one, or at once when ``batch_max_events`` calls
are buffered (or a flush is asked for). When the exporter is ready, the cycle takes what the
buffer holds (up to a cap), builds the events (ids, wall-clock times, costs, evaluators, the
redaction hook: nothing of this runs on the host's threads) and hands them to the exporter
(:mod:`promptprof.export`): by default the Kafka exporter, wrapped by the disk spool when
``spool_dir`` is set. While the exporter is not ready (Kafka unreachable, retries pending, the
spool full) nothing is taken, and overflow shows as counted drops at the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import asdict
from typing import Any

import structlog

from promptprof._buffer import EventBuffer
from promptprof._config import Settings
from promptprof._record import EventBuilder, InvalidValue
from promptprof.export._base import Cycle, Exporter, ExportStats
from promptprof.export._kafka import producer_options

__all__ = ["Linger", "Sender", "producer_options"]

log = structlog.get_logger("promptprof")

CYCLE_BATCHES = 40  # envelopes' worth of events taken per cycle
CLOCK_SYNC_S = 60.0
MIN_WAIT_S = 0.001
MAX_WAIT_S = 0.05  # longest wait: a stop or a flush asked for is seen within it


class Linger:
    """When the next cycle is due: ``linger_s`` after the previous take, or at once when
    ``batch_max`` calls are buffered."""

    def __init__(self, linger_s: float, batch_max: int) -> None:
        self.linger_s = linger_s
        self.batch_max = batch_max
        self._last = float("-inf")

    def remaining(self, now: float, buffered: int) -> float:
        """Seconds until the next cycle is due (0 when it is)."""
        if buffered >= self.batch_max:
            return 0.0
        return max(0.0, self._last + self.linger_s - now)

    def taken(self, now: float) -> None:
        """A cycle took the buffer at ``now``."""
        self._last = now


class Sender:
    """Takes buffered calls on a daemon thread, builds their events, hands them to ``exporter``."""

    def __init__(
        self, buffer: EventBuffer, builder: EventBuilder, settings: Settings, exporter: Exporter
    ) -> None:
        self.buffer = buffer
        self.builder = builder
        self.settings = settings
        self.exporter = exporter
        self.stats = ExportStats()
        producer = settings.producer
        self._linger = Linger(producer.linger_ms / 1000, producer.batch_max_events)
        self._stop = threading.Event()
        self._flush = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="promptprof-sender", daemon=True)

    def start(self) -> None:
        """Start the sender thread."""
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Flush for at most ``timeout`` seconds, then stop; True when nothing was lost."""
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 3.0)
        if self._thread.is_alive():
            return False
        return self.stats.dropped_close == 0 and self.stats.dropped_spool_full == 0

    def flush_soon(self) -> None:
        """Make the next cycle due now (a flush was asked for)."""
        self._flush.set()

    @property
    def alive(self) -> bool:
        """Whether the sender thread is running."""
        return self._thread.is_alive()

    def snapshot(self) -> dict[str, Any]:
        """The counters."""
        return asdict(self.stats)

    def _run(self) -> None:
        while True:
            try:
                asyncio.run(self._main())
                return
            except Exception as exc:  # report and restart; what the exporter holds is kept
                self.stats.last_error = f"sender crashed: {exc!r}"
                with contextlib.suppress(ValueError, OSError):  # a closed log stream (at exit)
                    log.error("promptprof.sender_crashed", error=repr(exc), restart_in_s=1.0)
                if self._stop.wait(1.0) and time.monotonic() >= self._deadline:
                    self.stats.dropped_close += self.buffer.discard_all()
                    return

    async def _main(self) -> None:
        exporter = self.exporter
        exporter.start(self.stats)
        next_report = time.monotonic() + self._report_interval()
        next_sync = time.monotonic() + CLOCK_SYNC_S
        while True:
            now = time.monotonic()
            if self._stop.is_set() and self._stopping_done(now):
                break
            if now >= next_report:
                self._report()
                next_report = now + self._report_interval()
            if now >= next_sync:
                self.builder.sync_clock()
                next_sync = now + CLOCK_SYNC_S
            self.buffer.hold(self.stats.held_bytes)
            due = self._due(now)
            if not exporter.ready() or due > 0:
                await exporter.progress(self._slice(due if exporter.ready() else MAX_WAIT_S))
                continue
            self._linger.taken(now)
            self._flush.clear()
            events = self._take()
            if events:
                await exporter.export(events)
            self.buffer.hold(self.stats.held_bytes)
        await self._finish()

    def _stopping_done(self, now: float) -> bool:
        """Once a stop is asked for: whether to finish now (the deadline passed, the buffer is
        empty, or a durable exporter cannot take more: it keeps the rest at shutdown)."""
        return now >= self._deadline or not self.buffer or (
            self.exporter.durable and not self.exporter.ready()
        )

    async def _finish(self) -> None:
        """Hand the buffer's leftovers to a durable exporter (else count them), shut it down."""
        if self.exporter.durable:
            while self.buffer:
                await self.exporter.export(self._take())
        lost = self.buffer.discard_all()
        self.stats.dropped_close += lost
        if lost:
            log.warning("promptprof.dropped_at_close", events=lost, where="buffer")
        await self.exporter.shutdown(self._deadline)
        self._report()

    def _due(self, now: float) -> float:
        """Seconds until the next cycle (0 once a stop or a flush is asked and calls wait)."""
        if self.buffer and (self._stop.is_set() or self._flush.is_set()):
            return 0.0
        return self._linger.remaining(now, len(self.buffer))

    def _slice(self, seconds: float) -> float:
        """A wait of ``seconds`` within [``MIN_WAIT_S``, ``MAX_WAIT_S``], and not past the
        deadline once a stop is asked for."""
        if self._stop.is_set():
            seconds = min(seconds, self._deadline - time.monotonic())
        return max(min(seconds, MAX_WAIT_S), MIN_WAIT_S)

    def _take(self) -> Cycle:
        """Take a cycle's worth of calls and build their events (failures counted)."""
        items = self.buffer.take(self.settings.producer.batch_max_events * CYCLE_BATCHES)
        cycle = Cycle()
        keys, events = cycle.keys, cycle.events
        build = self.builder.build_keyed
        for item in items:
            try:
                key, event = build(item)
            except InvalidValue as exc:
                self.stats.dropped_invalid_value += 1
                self.stats.last_error = f"refused a call: {exc}"
                continue
            except Exception as exc:
                self.stats.drop_invalid(f"cannot build event: {exc!r}")
                continue
            keys.append(key)
            events.append(event)
        return cycle

    def _report_interval(self) -> float:
        interval = self.settings.producer.metrics_log_interval_s
        return interval if interval > 0 else float("inf")

    def _report(self) -> None:
        # The host may have closed the log stream by now (interpreter exit): never a crash.
        with contextlib.suppress(ValueError, OSError):
            log.info("promptprof.producer_stats", **self.snapshot(), buffer_depth=len(self.buffer))
