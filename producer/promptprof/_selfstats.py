"""The producer's self-metrics on the wire: a small stats event every interval.

Every ``producer.stats_interval_s`` (10 s by default; 0 disables) a daemon thread reads
:meth:`promptprof._profiler.Profiler.stats` and sends it as one JSON record to the producer-stats
topic (``topics.producer_stats``), keyed by service, host and process id. The worker writes each
one to InfluxDB (measurement ``promptprof_producer``), so a team sees per service, environment,
host and process what was recorded, sent, dropped (by reason), spooled and replayed, the buffer's
depth and bytes, retries and the last error; a producer whose reports stop is stale. The last
report, sent when the profiler closes (when Kafka was reached), says ``final``: a process that
ended cleanly is not stale.

A topic of its own rather than the calls topic: the calls topic is keyed by series and read by
the windows engine, which dead-letters anything that is not a call; a stats event concerns no
series, and a worker that does not know the kind would count it as a bad record. The reporter
has its own Kafka connection and thread, so a report never waits behind calls (or the calls
behind it), and it still reports when the sender thread died (``sender_alive`` false).

It never hurts the host: it runs on its own thread, holds one report at a time (a report that
cannot be sent is replaced by the next, whose counters are cumulative), and no exception leaves
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer

from promptprof._config import Settings

log = structlog.get_logger("promptprof")

STATS_KIND = "producer_stats"
SCHEMA_VERSION = 1
SEND_TIMEOUT_S = 5.0
FINAL_TIMEOUT_S = 1.0
LAST_ERROR_CHARS = 300
WAIT_SLICE_S = 0.1


def stats_event(
    stats: Mapping[str, Any], settings: Settings, *, started_ns: int, final: bool = False,
) -> dict[str, Any]:
    """The stats event of a report: who sends it, when, and its numeric counters."""
    producer = settings.producer
    counters = {k: v for k, v in stats.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}
    last_error = stats.get("last_error")
    return {
        "kind": STATS_KIND,
        "schema_version": SCHEMA_VERSION,
        "service": producer.service_name,
        "environment": producer.environment,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_unix_nano": started_ns,
        "time_unix_nano": time.time_ns(),
        "interval_s": producer.stats_interval_s,
        "final": final,
        "sender_alive": bool(stats.get("sender_alive", False)),
        "last_error": str(last_error)[:LAST_ERROR_CHARS] if last_error else None,
        "stats": counters,
    }


class StatsReporter:
    """Sends ``read()`` every interval on a daemon thread, with a Kafka producer of its own."""

    def __init__(self, read: Callable[[], Mapping[str, Any]], settings: Settings) -> None:
        """A reporter of ``read`` (not started) for the producer-stats topic of ``settings``."""
        self.read = read
        self.settings = settings
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self._started_ns = time.time_ns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promptprof-stats", daemon=True)

    def start(self) -> None:
        """Start the reporting thread (its first report goes at once)."""
        self._thread.start()

    def stop(self, timeout: float = FINAL_TIMEOUT_S + 1.0) -> None:
        """Send the final report (for at most about a second) and end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # never into the host; the reports just stop
            self._failed(exc)

    async def _main(self) -> None:
        producer: AIOKafkaProducer | None = None
        try:
            while True:
                final = self._stop.is_set()
                if final and producer is None:
                    return  # Kafka was not reached: closing must not wait for it
                producer = await self._report(producer, final)
                if final:
                    return
                await self._wait(self.settings.producer.stats_interval_s)
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(WAIT_SLICE_S, deadline - time.monotonic()))

    async def _report(
        self, producer: AIOKafkaProducer | None, final: bool
    ) -> AIOKafkaProducer | None:
        """Send one report; the producer to use next time (None after a failure)."""
        timeout = FINAL_TIMEOUT_S if final else SEND_TIMEOUT_S
        try:
            event = stats_event(self.read(), self.settings, started_ns=self._started_ns,
                                final=final)
            if producer is None:
                options = self.settings.kafka.client_options()
                options["request_timeout_ms"] = int(SEND_TIMEOUT_S * 1000)
                producer = AIOKafkaProducer(**options)
                await asyncio.wait_for(producer.start(), timeout)
            key = f"{event['service']}\x1f{event['host']}\x1f{event['pid']}".encode()
            await asyncio.wait_for(producer.send_and_wait(
                self.settings.topics.producer_stats, orjson.dumps(event), key=key), timeout)
        except Exception as exc:
            self._failed(exc)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
            return None
        self.sent += 1
        return producer

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = repr(exc)
        with contextlib.suppress(ValueError, OSError):  # a closed log stream (at exit)
            log.debug("promptprof.stats_report_failed", error=self.last_error)


def start_reporter(
    read: Callable[[], Mapping[str, Any]], settings: Settings
) -> StatsReporter | None:
    """A started reporter of ``read``, or None when reports are disabled (interval 0)."""
    if settings.producer.stats_interval_s <= 0:
        return None
    reporter = StatsReporter(read, settings)
    reporter.start()
    return reporter
