"""The Kafka exporter: packs each cycle into per-partition envelopes and publishes them.

Up to :data:`MAX_IN_FLIGHT` cycles are sent and not yet acknowledged at once, so packing the next
cycle overlaps waiting for acks. Envelopes that fail are kept and retried with exponential
backoff, in front of newer ones and in the order their cycles were dispatched, so a series stays
in order on its partition; while any are pending the exporter is not ready, so the engine takes
nothing more and overflow shows as counted drops at the buffer. Kafka unreachable is the same:
not ready until a connection is made (with backoff). At shutdown what could not be delivered
before the deadline is counted in ``dropped_close``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from asyncio import FIRST_COMPLETED
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from promptprof._backoff import Backoff
from promptprof._config import Settings
from promptprof.export._base import Cycle, ExportStats
from promptprof.export._packing import Envelope, Packer

log = structlog.get_logger("promptprof")

MAX_IN_FLIGHT = 3  # cycles sent and not yet acknowledged
METADATA_TIMEOUT_S = 5.0


class KafkaExporter:
    """Publishes events to the calls topic, one columnar envelope per partition and cycle.

    Besides the :class:`~promptprof.export._base.Exporter` protocol it offers its record-level
    steps (:meth:`pack`, :meth:`send`, :meth:`connect`, :meth:`take_unsent`, the failure clock)
    to a wrapper such as :class:`~promptprof.export._spooling.SpoolingExporter`.
    """

    durable = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.calls
        producer = settings.producer
        self.stats = ExportStats()
        self.backoff = Backoff(
            producer.retry_backoff_initial_ms / 1000, producer.retry_backoff_max_ms / 1000
        )
        self.retry_at = 0.0
        self.failing_since: float | None = None  # first failure since the last success
        self.waiting_since: float | None = None  # events packed and not yet dispatched
        self.producer: AIOKafkaProducer | None = None
        self._packer = Packer(producer.batch_max_events, self._drop_invalid)
        self._pending: list[Envelope] = []
        self._failed: list[tuple[int, list[Envelope]]] = []  # at the head of _pending, by seq
        self._in_flight: dict[asyncio.Task[None], list[Envelope]] = {}
        self._seq = itertools.count()

    # -- the exporter protocol ----------------------------------------------------------------

    def start(self, stats: ExportStats) -> None:
        """Count into ``stats``; forget a previous loop's producer and tasks (their envelopes go
        back in front of the pending ones)."""
        self.stats = stats
        self.producer = None
        self._pending = self.take_unsent()

    def ready(self) -> bool:
        """Connected, nothing pending, fewer than :data:`MAX_IN_FLIGHT` cycles in flight."""
        return (
            self.producer is not None and not self._pending
            and len(self._in_flight) < MAX_IN_FLIGHT
        )

    async def export(self, cycle: Cycle) -> None:
        """Pack the events and dispatch them (or hold them when they cannot go yet)."""
        self._pending.extend(self.pack(cycle))
        self.waiting_since = self.waiting_since or time.monotonic()
        self._dispatch()
        self.note_held()

    async def progress(self, timeout: float) -> None:
        """Connect, retry what is pending when its backoff has passed, or wait for acks."""
        now = time.monotonic()
        if self.producer is None:
            if now >= self.retry_at:
                await self.connect()
                return
            await asyncio.sleep(min(timeout, self.retry_at - now))
            return
        if self._pending and now >= self.retry_at and len(self._in_flight) < MAX_IN_FLIGHT:
            self._dispatch()
            return
        if self._pending and now < self.retry_at:
            timeout = min(timeout, self.retry_at - now)
        await self.wait_in_flight(timeout)

    async def shutdown(self, deadline: float) -> None:
        """Deliver what is held until ``deadline``; count the rest in ``dropped_close``."""
        await self.drain(deadline)
        lost = sum(e.events for e in self.take_unsent())
        self.stats.dropped_close += lost
        if lost:
            log.warning("promptprof.dropped_at_close", events=lost)
        await self.close()

    # -- record-level steps (used by wrappers) ------------------------------------------------

    def pack(self, cycle: Cycle) -> list[Envelope]:
        """Envelopes of the events, per partition when the partition count is known."""
        return self._packer.pack(cycle, self._partition_count())

    def held(self) -> bool:
        """Whether envelopes are pending or in flight."""
        return bool(self._pending or self._in_flight)

    def in_flight(self) -> bool:
        """Whether cycles are sent and not yet acknowledged."""
        return bool(self._in_flight)

    async def wait_in_flight(self, timeout: float) -> None:
        """Wait until a cycle in flight ends, at most ``timeout`` seconds."""
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        elif timeout > 0:
            await asyncio.sleep(timeout)

    async def drain(self, deadline: float) -> None:
        """Keep delivering until nothing is held or ``deadline`` passed."""
        while self.held() and time.monotonic() < deadline:
            await self.progress(min(0.05, deadline - time.monotonic()))

    def take_unsent(self) -> list[Envelope]:
        """Cancel the cycles in flight; their envelopes (the oldest) and the pending ones, which
        are no longer this exporter's. A cancelled cycle may have reached Kafka already."""
        unsent = [e for batch in self._in_flight.values() for e in batch] + self._pending
        for task in self._in_flight:
            task.cancel()
        self._in_flight, self._pending, self._failed = {}, [], []
        self.note_held()
        return unsent

    async def connect(self) -> bool:
        """Start a producer and learn the topic's partitions; on failure back off."""
        producer = None
        try:
            producer = AIOKafkaProducer(**producer_options(self.settings))
            await producer.start()
        except Exception as exc:
            self.stats.connect_failures += 1
            self.stats.last_error = f"kafka unreachable: {exc!r}"
            log.warning(
                "promptprof.kafka_unreachable", error=repr(exc),
                attempts=self.stats.connect_failures, retry_in_s=self.backoff.current,
            )
            if producer is not None:
                await _quiet_stop(producer)
            self.note_failure()
            return False
        log.info("promptprof.kafka_connected", bootstrap=self.settings.kafka.bootstrap_servers)
        await self._learn_partitions(producer)
        self.producer = producer
        return True

    def note_failure(self) -> None:
        """A connection or a send failed: retry after the next backoff step."""
        self.retry_at = time.monotonic() + self.backoff.next()
        self.failing_since = self.failing_since or time.monotonic()

    def note_success(self) -> None:
        """Kafka acknowledged everything of a send."""
        self.backoff.reset()
        self.failing_since = None

    async def send(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Publish envelopes (each to its partition, or keyed); return the ones that failed."""
        producer = self.producer
        assert producer is not None
        futures: list[asyncio.Future[Any] | None] = []
        failed: list[Envelope] = []
        for envelope in envelopes:
            try:
                futures.append(
                    await producer.send(
                        self.topic, envelope.value, key=envelope.key, partition=envelope.partition
                    )
                )
            except Exception as exc:
                self._note_error(exc)
                failed.append(envelope)
                futures.append(None)
        results = iter(await asyncio.gather(*filter(None, futures), return_exceptions=True))
        for envelope, future in zip(envelopes, futures, strict=True):
            if future is None:
                continue
            outcome = next(results)
            if isinstance(outcome, BaseException):
                self._note_error(outcome)
                failed.append(envelope)
            else:
                self.stats.sent_events += envelope.events
                self.stats.sent_records += 1
                self.stats.sent_bytes += len(envelope.value)
        return failed

    async def close(self) -> None:
        """Stop the producer."""
        if self.producer is not None:
            await _quiet_stop(self.producer)
            self.producer = None

    def note_held(self) -> None:
        """Refresh the held gauges (``pending_events``, ``held_bytes``)."""
        batches = [self._pending, *self._in_flight.values()]
        self.stats.pending_events = sum(e.events for batch in batches for e in batch)
        self.stats.held_bytes = sum(len(e.value) for batch in batches for e in batch)

    # -- internals ----------------------------------------------------------------------------

    def _drop_invalid(self, reason: str) -> None:
        self.stats.drop_invalid(reason)

    def _partition_count(self) -> int | None:
        if self.producer is None:
            return None
        partitions = self.producer.client.cluster.partitions_for_topic(self.topic)
        return len(partitions) if partitions else None

    async def _learn_partitions(self, producer: AIOKafkaProducer) -> None:
        """Ask for the calls topic's partitions; on failure pack by series until a later cycle
        finds them in the producer's metadata."""
        try:
            await asyncio.wait_for(producer.partitions_for(self.topic), METADATA_TIMEOUT_S)
        except Exception as exc:
            self.stats.last_error = f"no metadata for the calls topic: {exc!r}"
            log.warning("promptprof.topic_metadata_missing", error=repr(exc))

    def _dispatch(self) -> None:
        """Send the pending envelopes as one cycle when connected and allowed."""
        ready = self.producer is not None and time.monotonic() >= self.retry_at
        if not self._pending or not ready or len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        batch, self._pending, self._failed = self._pending, [], []
        self.waiting_since = None
        task = asyncio.create_task(self._deliver(batch, next(self._seq)))
        self._in_flight[task] = batch
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.note_held()

    async def _deliver(self, batch: list[Envelope], seq: int) -> None:
        """Send one cycle's envelopes; put the failed ones back in front for a retry, in the
        order the cycles were dispatched (cycles in flight together fail in any order)."""
        try:
            failed = await self.send(batch)
        finally:  # no longer in flight before its failures are pending again
            self._in_flight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        if failed:
            head = sum(len(envelopes) for _, envelopes in self._failed)
            fresh = self._pending[head:]
            bisect.insort(self._failed, (seq, failed), key=lambda item: item[0])
            self._pending = [e for _, envelopes in self._failed for e in envelopes] + fresh
            self.stats.retries += 1
            self.note_failure()
            self.waiting_since = self.waiting_since or time.monotonic()
        else:
            self.note_success()

    def _note_error(self, exc: BaseException) -> None:
        self.stats.send_errors += 1
        self.stats.last_error = f"send failed: {exc!r}"
        if self.stats.send_errors == 1 or self.stats.send_errors % 100 == 0:
            log.warning("promptprof.send_failed", error=repr(exc), errors=self.stats.send_errors)


def producer_options(settings: Settings) -> dict[str, Any]:
    """The aiokafka producer options the exporter uses (benchmarks reuse them for a fair peer)."""
    compression = settings.producer.compression
    return {
        **settings.kafka.client_options(),
        "compression_type": None if compression == "none" else compression,
        "linger_ms": 5,
        "max_batch_size": 1_048_576,
        "max_request_size": 4 * 1_048_576,
        "acks": 1,
    }


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout=2.0)
    except Exception as exc:
        log.debug("promptprof.producer_stop_failed", error=repr(exc))
