"""The background sender: its own thread and event loop, batching events into Kafka envelopes.

Each cycle takes what the buffer holds (up to a cap), builds the event dicts, groups them by
series key, encodes one envelope per ``batch_max_events`` events of a series and publishes the
envelopes with aiokafka. Envelopes that fail are kept and retried with exponential backoff; while
they are pending nothing more is taken, so memory stays within the buffer's bound plus one
cycle's envelopes, and overflow shows up as counted drops at the buffer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from asyncio import FIRST_COMPLETED
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from promptprof.buffer import EventBuffer
from promptprof.config import Settings
from promptprof.envelope import encode_envelope
from promptprof.record import EventBuilder

log = structlog.get_logger("promptprof")

MAX_RECORD_BYTES = 900_000
CYCLE_BATCHES = 40  # envelopes' worth of events taken per cycle
MAX_IN_FLIGHT = 3  # cycles sent and not yet acknowledged: preparing overlaps waiting for acks
CLOCK_SYNC_S = 60.0


@dataclass
class SenderStats:
    """Counters kept by the sender thread (read from any thread)."""

    sent_events: int = 0
    sent_records: int = 0
    sent_bytes: int = 0
    send_errors: int = 0
    retries: int = 0
    connect_failures: int = 0
    dropped_invalid: int = 0
    dropped_close: int = 0
    pending_events: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One encoded Kafka record."""

    key: bytes
    value: bytes
    events: int


class Backoff:
    """Exponential backoff from ``initial`` to ``maximum`` seconds, reset on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.current = initial

    def next(self) -> float:
        """The delay to wait now; doubles the next one."""
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.current = self.initial


class Sender:
    """Ships buffered calls to Kafka from a daemon thread."""

    def __init__(self, buffer: EventBuffer, builder: EventBuilder, settings: Settings) -> None:
        self.buffer = buffer
        self.builder = builder
        self.settings = settings
        self.stats = SenderStats()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._pending: list[Envelope] = []
        self._in_flight: dict[int, list[Envelope]] = {}
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name="promptprof-sender", daemon=True)
        producer = settings.producer
        self._backoff = Backoff(
            producer.retry_backoff_initial_ms / 1000, producer.retry_backoff_max_ms / 1000
        )

    def start(self) -> None:
        """Start the sender thread."""
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Flush for at most ``timeout`` seconds, then stop; True when everything was sent."""
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            return False
        self._drop_unsent()  # only matters when the thread died before it could
        return self.stats.dropped_close == 0

    @property
    def alive(self) -> bool:
        """Whether the sender thread is running."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                asyncio.run(self._main())
                return
            except Exception as exc:  # report and restart; pending envelopes are kept
                self.stats.last_error = f"sender crashed: {exc!r}"
                log.error("promptprof.sender_crashed", error=repr(exc), restart_in_s=1.0)
                if self._stop.wait(1.0) and time.monotonic() >= self._deadline:
                    self._drop_unsent()
                    return

    async def _main(self) -> None:
        producer: AIOKafkaProducer | None = None
        in_flight: set[asyncio.Task[None]] = set()
        next_report = time.monotonic() + self._report_interval()
        next_sync = time.monotonic() + CLOCK_SYNC_S
        while True:
            now = time.monotonic()
            unsent = self._pending or self.buffer or in_flight
            if self._stop.is_set() and (now >= self._deadline or not unsent):
                break
            if now >= next_report:
                self._report()
                next_report = now + self._report_interval()
            if now >= next_sync:
                self.builder.sync_clock()
                next_sync = now + CLOCK_SYNC_S
            if now < self._retry_at:
                await self._wait(self._retry_at - now)
                continue
            if len(in_flight) >= MAX_IN_FLIGHT:
                await asyncio.wait(in_flight, timeout=0.05, return_when=FIRST_COMPLETED)
                continue
            if not self._pending:
                self._pending = self._prepare()
                self._note_pending()
            if not self._pending:
                await self._idle(in_flight)
                continue
            if producer is None:
                producer = await self._connect()
                if producer is None:
                    await self._wait(self._backoff.next())
                    continue
            batch, self._pending = self._pending, []
            task = asyncio.create_task(self._deliver(producer, batch))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        for task in in_flight:
            task.cancel()  # past the deadline: their envelopes count as dropped below
        await self._shutdown(producer)

    async def _deliver(self, producer: AIOKafkaProducer, batch: list[Envelope]) -> None:
        """Send one cycle's envelopes; put the failed ones back in front for a retry."""
        self._in_flight[id(batch)] = batch
        try:
            failed = await self._send(producer, batch)
        finally:
            self._in_flight.pop(id(batch), None)
        if failed:
            self._pending = failed + self._pending
            self.stats.retries += 1
            self._retry_at = time.monotonic() + self._backoff.next()
        else:
            self._backoff.reset()
        self._note_pending()

    def _note_pending(self) -> None:
        batches = [self._pending, *self._in_flight.values()]
        self.stats.pending_events = sum(e.events for batch in batches for e in batch)

    def _report_interval(self) -> float:
        interval = self.settings.producer.metrics_log_interval_s
        return interval if interval > 0 else float("inf")

    def _report(self) -> None:
        log.info("promptprof.producer_stats", **asdict(self.stats), buffer_depth=len(self.buffer))

    async def _idle(self, in_flight: set[asyncio.Task[None]]) -> None:
        if len(self.buffer) >= self.settings.producer.batch_max_events:
            return
        linger = self.settings.producer.linger_ms / 1000
        if in_flight:
            await asyncio.wait(in_flight, timeout=linger, return_when=FIRST_COMPLETED)
        else:
            await self._wait(linger)

    async def _wait(self, seconds: float) -> None:
        """Sleep, but no longer than the flush deadline once a stop is asked for."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            limit = min(end, self._deadline) if self._stop.is_set() else end
            if now >= limit:
                return
            await asyncio.sleep(min(limit - now, 0.05))

    def _prepare(self) -> list[Envelope]:
        batch_max = self.settings.producer.batch_max_events
        items = self.buffer.take(batch_max * CYCLE_BATCHES)
        if not items:
            return []
        groups: defaultdict[bytes, list[dict[str, Any]]] = defaultdict(list)
        build = self.builder.build_keyed
        for item in items:
            try:
                key, event = build(item)
            except Exception as exc:
                self.stats.dropped_invalid += 1
                self.stats.last_error = f"cannot build event: {exc!r}"
                continue
            groups[key].append(event)
        envelopes: list[Envelope] = []
        for key, events in groups.items():
            for start in range(0, len(events), batch_max):
                envelopes.extend(self._encode(key, events[start : start + batch_max]))
        return envelopes

    def _encode(self, key: bytes, events: list[dict[str, Any]]) -> list[Envelope]:
        try:
            value = encode_envelope(events)
        except TypeError as exc:
            return self._encode_each(key, events, exc)
        if len(value) <= MAX_RECORD_BYTES or len(events) == 1:
            if len(value) > MAX_RECORD_BYTES:
                self.stats.dropped_invalid += 1
                self.stats.last_error = f"event of {len(value)} bytes exceeds the record limit"
                return []
            return [Envelope(key, value, len(events))]
        half = len(events) // 2
        return self._encode(key, events[:half]) + self._encode(key, events[half:])

    def _encode_each(
        self, key: bytes, events: list[dict[str, Any]], exc: Exception
    ) -> list[Envelope]:
        """Find the events that cannot be serialised, drop and count them, keep the rest."""
        good = []
        for event in events:
            try:
                encode_envelope([event])
                good.append(event)
            except TypeError:
                self.stats.dropped_invalid += 1
        self.stats.last_error = f"cannot serialise event: {exc}"
        return self._encode(key, good) if good else []

    async def _connect(self) -> AIOKafkaProducer | None:
        producer = None
        try:
            producer = AIOKafkaProducer(**self._producer_options())
            await producer.start()
        except Exception as exc:
            self.stats.connect_failures += 1
            self.stats.last_error = f"kafka unreachable: {exc!r}"
            log.warning(
                "promptprof.kafka_unreachable",
                error=repr(exc),
                attempts=self.stats.connect_failures,
                retry_in_s=self._backoff.current,
            )
            if producer is not None:
                await _quiet_stop(producer)
            return None
        log.info("promptprof.kafka_connected", bootstrap=self.settings.kafka.bootstrap_servers)
        return producer

    def _producer_options(self) -> dict[str, Any]:
        producer = self.settings.producer
        compression = None if producer.compression == "none" else producer.compression
        return {
            **self.settings.kafka.client_options(),
            "compression_type": compression,
            "linger_ms": 5,
            "max_batch_size": 1_048_576,
            "max_request_size": 4 * 1_048_576,
            "acks": 1,
        }

    async def _send(self, producer: AIOKafkaProducer, envelopes: list[Envelope]) -> list[Envelope]:
        """Publish envelopes; return the ones that failed."""
        topic = self.settings.topics.calls
        futures = []
        failed: list[Envelope] = []
        for envelope in envelopes:
            try:
                futures.append(await producer.send(topic, envelope.value, key=envelope.key))
            except Exception as exc:
                self._note_error(exc)
                failed.append(envelope)
                futures.append(None)
        sent = (f for f in futures if f is not None)
        results = await asyncio.gather(*sent, return_exceptions=True)
        outcomes = iter(results)
        for envelope, future in zip(envelopes, futures, strict=True):
            if future is None:
                continue
            outcome = next(outcomes)
            if isinstance(outcome, BaseException):
                self._note_error(outcome)
                failed.append(envelope)
            else:
                self.stats.sent_events += envelope.events
                self.stats.sent_records += 1
                self.stats.sent_bytes += len(envelope.value)
        return failed

    def _note_error(self, exc: BaseException) -> None:
        self.stats.send_errors += 1
        self.stats.last_error = f"send failed: {exc!r}"
        if self.stats.send_errors == 1 or self.stats.send_errors % 100 == 0:
            log.warning("promptprof.send_failed", error=repr(exc), errors=self.stats.send_errors)

    async def _shutdown(self, producer: AIOKafkaProducer | None) -> None:
        self._drop_unsent()
        if producer is not None:
            await _quiet_stop(producer)
        self._report()

    def _drop_unsent(self) -> None:
        batches = [self._pending, *self._in_flight.values()]
        lost = sum(e.events for batch in batches for e in batch) + self.buffer.discard_all()
        self._pending, self._in_flight = [], {}
        self.stats.dropped_close += lost
        self.stats.pending_events = 0
        if lost:
            log.warning("promptprof.dropped_at_close", events=lost)


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout=2.0)
    except Exception as exc:
        log.debug("promptprof.producer_stop_failed", error=repr(exc))
