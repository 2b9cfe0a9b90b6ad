"""The background sender: its own thread and event loop, batching events into Kafka envelopes.

A cycle is due ``linger_ms`` after the previous one, or at once when ``batch_max_events`` are
buffered. It takes what the buffer holds (up to a cap), builds the event dicts, packs them into
one columnar envelope per partition of the calls topic (:mod:`promptprof.export.packing`) and
publishes the envelopes with aiokafka, each to its partition. Envelopes that fail are kept and
retried with exponential backoff; while they are pending nothing more is taken, so memory stays
within the buffer's bound plus the cycles in flight and pending, and overflow shows up as counted
drops at the buffer.

With ``producer.spool_dir`` set, a cycle that failed or waited for ``spool_after_s`` (or any
unsent cycle at close) goes to the disk spool (:mod:`promptprof.spool`) instead. While the spool
holds records the sender is in *spool mode*: every new cycle is appended behind them and only the
spool is sent, oldest first, so order per series is kept; the cursor is committed after each
acknowledged replay batch. When the spool is empty again, cycles go straight to Kafka. While the
spool is full nothing more is taken from the buffer, whose own bound then drops the newest.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import threading
import time
from asyncio import FIRST_COMPLETED
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from promptprof.backoff import Backoff
from promptprof.buffer import EventBuffer
from promptprof.config import Settings
from promptprof.export.packing import Envelope, Packer
from promptprof.record import EventBuilder
from promptprof.spool import Spool, SpoolRecord

log = structlog.get_logger("promptprof")

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
    spooled_events: int = 0
    replayed_events: int = 0
    dropped_spool_full: int = 0
    spool_bytes: int = 0
    spool_events: int = 0
    spool_oldest_age_s: float = 0.0
    spool_corrupt_frames: int = 0
    spool_write_errors: int = 0


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
        self._spool: Spool | None = None
        self._spooling = False  # the spool holds records: new cycles go behind them
        self._failing_since: float | None = None  # first failure since the last success
        self._waiting_since: float | None = None  # a prepared cycle not yet dispatched
        self._replay_acked: set[tuple[int, int]] = set()  # acked beyond the spool's cursor
        self._seq = itertools.count()
        self._failed: list[tuple[int, list[Envelope]]] = []  # at the head of _pending, by seq
        producer = settings.producer
        self._linger = Linger(producer.linger_ms / 1000, producer.batch_max_events)
        self._packer = Packer(producer.batch_max_events, self._drop_invalid)
        self._partitions: int | None = None  # of the calls topic, once Kafka told
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
        return self.stats.dropped_close == 0 and self.stats.dropped_spool_full == 0

    @property
    def alive(self) -> bool:
        """Whether the sender thread is running."""
        return self._thread.is_alive()

    def snapshot(self) -> dict[str, Any]:
        """The counters, with the spool's gauges read now."""
        spool = self._spool
        if spool is not None:
            self._note_spool()
            self.stats.spool_oldest_age_s = round(spool.oldest_age_s(), 3)
        return asdict(self.stats)

    def _open_spool(self) -> None:
        directory = self.settings.producer.spool_dir
        if directory is None:
            return
        try:
            self._spool = Spool(directory, self.settings.producer.spool_max_bytes)
        except Exception as exc:  # a locked or unusable directory: run without a spool
            self.stats.last_error = f"spool unavailable: {exc!r}"
            log.error("promptprof.spool_unavailable", dir=str(directory), error=repr(exc))
            return
        self._note_spool()
        if self._spool.pending_events:
            self._spooling = True
            log.info(
                "promptprof.spool_found", events=self._spool.pending_events,
                corrupt_frames=self._spool.corrupt_frames,
            )

    def _note_spool(self) -> None:
        spool = self._spool
        if spool is not None:
            self.stats.spool_bytes = spool.pending_bytes
            self.stats.spool_events = spool.pending_events
            self.stats.spool_corrupt_frames = spool.corrupt_frames
            self.stats.spool_write_errors = spool.write_errors

    def _run(self) -> None:
        self._open_spool()
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
            if not self._spooling and self._should_spool(now):
                if in_flight:  # dispatch nothing more; spool once these came back
                    await asyncio.wait(in_flight, timeout=0.05, return_when=FIRST_COMPLETED)
                    continue
                self._spooling = True
                log.warning("promptprof.spooling", dir=str(self.settings.producer.spool_dir))
            if self._spooling:
                producer = await self._spool_cycle(producer)
                continue
            if now < self._retry_at:
                await self._wait(self._retry_at - now)
                continue
            if len(in_flight) >= MAX_IN_FLIGHT:
                await asyncio.wait(in_flight, timeout=0.05, return_when=FIRST_COMPLETED)
                continue
            if producer is None and (self._pending or self.buffer):
                producer = await self._connect()
                if producer is None:
                    self._failing_since = self._failing_since or time.monotonic()
                    await self._wait(self._backoff.next())
                    continue
            if not self._pending:
                due = self._linger.remaining(now, len(self.buffer))
                if due > 0 and not (self._stop.is_set() and self.buffer):
                    await self._idle(in_flight, due)
                    continue
                self._linger.taken(now)
                self._partitions = _partition_count(producer, self.settings.topics.calls)
                self._pending = self._prepare()
                self._note_pending()
                if not self._pending:
                    continue
                self._waiting_since = self._waiting_since or now
            assert producer is not None
            batch, self._pending = self._pending, []
            self._failed = []
            self._waiting_since = None
            task = asyncio.create_task(self._deliver(producer, batch, next(self._seq)))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        for task in in_flight:
            task.cancel()  # past the deadline: their envelopes count as dropped below
        await self._shutdown(producer)

    async def _deliver(self, producer: AIOKafkaProducer, batch: list[Envelope], seq: int) -> None:
        """Send one cycle's envelopes; put the failed ones back in front for a retry, in the
        order the cycles were dispatched (cycles in flight together fail in any order)."""
        self._in_flight[id(batch)] = batch
        try:
            failed = await self._send(producer, batch)
        finally:
            self._in_flight.pop(id(batch), None)
        if failed:
            head = sum(len(envelopes) for _, envelopes in self._failed)
            fresh = self._pending[head:]
            bisect.insort(self._failed, (seq, failed), key=lambda item: item[0])
            self._pending = [e for _, envelopes in self._failed for e in envelopes] + fresh
            self.stats.retries += 1
            self._retry_at = time.monotonic() + self._backoff.next()
            self._failing_since = self._failing_since or time.monotonic()
            self._waiting_since = self._waiting_since or time.monotonic()
        else:
            self._backoff.reset()
            self._failing_since = None
        self._note_pending()

    # -- the spool --------------------------------------------------------------------------

    def _should_spool(self, now: float) -> bool:
        """Whether to spool: a cycle failed or waited ``spool_after_s`` (at once when stopping).
        The caller first lets the cycles in flight come back, so a failure cannot return behind
        spooled cycles (order per series)."""
        if self._spool is None or not (self._pending or self.buffer or self._in_flight):
            return False
        if self._stop.is_set():  # closing while Kafka fails: spool now rather than drop later
            return self._failing_since is not None
        after = self.settings.producer.spool_after_s
        since = [t for t in (self._failing_since, self._waiting_since) if t is not None]
        return bool(since) and now - min(since) >= after

    def _spool_pending(self) -> None:
        """Append the pending envelopes to the spool; what does not fit stays pending."""
        spool = self._spool
        if spool is None or not self._pending:
            return
        written = spool.append([(e.spool_key(), e.value, e.events) for e in self._pending])
        self._failed = []  # nothing is in flight in spool mode: the order is settled
        self.stats.spooled_events += sum(e.events for e in self._pending[:written])
        self._pending = self._pending[written:]
        self._waiting_since = time.monotonic() if self._pending else None
        self._note_pending()
        self._note_spool()

    async def _spool_cycle(self, producer: AIOKafkaProducer | None) -> AIOKafkaProducer | None:
        """One step of spool mode: memory to disk, then one replay batch when Kafka may answer."""
        spool = self._spool
        assert spool is not None
        self._spool_pending()
        if not self._pending and not spool.full and self.buffer:
            self._pending = self._prepare()
            self._spool_pending()
        if not spool.pending_events and not self._pending:
            self._spooling = False
            self._replay_acked.clear()
            log.info("promptprof.spool_drained", replayed=self.stats.replayed_events)
            return producer
        now = time.monotonic()
        if self._stop.is_set() or now < self._retry_at or not spool.pending_events:
            wait = self.settings.producer.linger_ms / 1000
            if now < self._retry_at:
                wait = min(wait, self._retry_at - now)
            await self._wait(wait)
            return producer
        if producer is None:
            producer = await self._connect()
            if producer is None:
                self._failing_since = self._failing_since or time.monotonic()
                self._retry_at = time.monotonic() + self._backoff.next()
                return None
        await self._replay(producer, spool)
        return producer

    async def _replay(self, producer: AIOKafkaProducer, spool: Spool) -> None:
        """Send the oldest spooled records; commit the cursor past the acknowledged prefix."""
        records = spool.read(CYCLE_BATCHES, skip=self._replay_acked)
        if not records:
            return
        envelopes = [Envelope.from_spool(r.key, r.value, r.events) for r in records]
        failed = {id(e) for e in await self._send(producer, envelopes)}
        acked: list[SpoolRecord] = []
        first_failed: SpoolRecord | None = None
        for record, envelope in zip(records, envelopes, strict=True):
            if id(envelope) in failed:
                first_failed = first_failed or record
            else:
                acked.append(record)
        self.stats.replayed_events += sum(r.events for r in acked)
        if first_failed is None:
            spool.commit(acked)
            self._backoff.reset()
            self._failing_since = None
        else:
            spool.commit(acked, advance_to=(first_failed.segment, first_failed.offset))
            self.stats.retries += 1
            self._retry_at = time.monotonic() + self._backoff.next()
            self._failing_since = self._failing_since or time.monotonic()
        cursor = spool.cursor
        self._replay_acked = {
            pos for pos in self._replay_acked | {(r.segment, r.offset) for r in acked}
            if pos >= cursor
        }
        self._note_spool()

    def _note_pending(self) -> None:
        batches = [self._pending, *self._in_flight.values()]
        self.stats.pending_events = sum(e.events for batch in batches for e in batch)

    def _report_interval(self) -> float:
        interval = self.settings.producer.metrics_log_interval_s
        return interval if interval > 0 else float("inf")

    def _report(self) -> None:
        log.info("promptprof.producer_stats", **self.snapshot(), buffer_depth=len(self.buffer))

    async def _idle(self, in_flight: set[asyncio.Task[None]], seconds: float) -> None:
        """Wait ``seconds`` for the next cycle, waking early when a cycle in flight completes."""
        if in_flight:
            await asyncio.wait(in_flight, timeout=seconds, return_when=FIRST_COMPLETED)
        else:
            await self._wait(seconds)

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
        """Take a cycle's worth of calls, build their events and pack them into envelopes."""
        items = self.buffer.take(self.settings.producer.batch_max_events * CYCLE_BATCHES)
        if not items:
            return []
        keyed = []
        build = self.builder.build_keyed
        for item in items:
            try:
                keyed.append(build(item))
            except Exception as exc:
                self._drop_invalid(f"cannot build event: {exc!r}")
        return self._packer.pack(keyed, self._partitions)

    def _drop_invalid(self, reason: str) -> None:
        self.stats.dropped_invalid += 1
        self.stats.last_error = reason

    async def _connect(self) -> AIOKafkaProducer | None:
        producer = None
        try:
            producer = AIOKafkaProducer(**producer_options(self.settings))
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
        await self._learn_partitions(producer)
        return producer

    async def _learn_partitions(self, producer: AIOKafkaProducer) -> None:
        """Ask for the calls topic's partition count (packing needs it); on failure, keep
        packing by series until a later cycle finds it in the producer's metadata."""
        try:
            await asyncio.wait_for(producer.partitions_for(self.settings.topics.calls), 5.0)
        except Exception as exc:
            self.stats.last_error = f"no metadata for the calls topic: {exc!r}"
            log.warning("promptprof.topic_metadata_missing", error=repr(exc))

    async def _send(self, producer: AIOKafkaProducer, envelopes: list[Envelope]) -> list[Envelope]:
        """Publish envelopes; return the ones that failed."""
        topic = self.settings.topics.calls
        futures = []
        failed: list[Envelope] = []
        for envelope in envelopes:
            try:
                futures.append(
                    await producer.send(
                        topic, envelope.value, key=envelope.key, partition=envelope.partition
                    )
                )
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
        """At the end: spool what is unsent (when the spool is on), count the rest as dropped."""
        spool = self._spool
        if spool is not None:
            self._spool_unsent(spool)
            return
        batches = [self._pending, *self._in_flight.values()]
        lost = sum(e.events for batch in batches for e in batch) + self.buffer.discard_all()
        self._pending, self._in_flight, self._failed = [], {}, []
        self.stats.dropped_close += lost
        self.stats.pending_events = 0
        if lost:
            log.warning("promptprof.dropped_at_close", events=lost)

    def _spool_unsent(self, spool: Spool) -> None:
        # In-flight cycles are the oldest; one cancelled at the deadline may have reached Kafka
        # already, so it can be sent twice (documented at-least-once window).
        unsent = [e for batch in self._in_flight.values() for e in batch] + self._pending
        self._pending, self._in_flight = [], {}
        while self.buffer:
            unsent.extend(self._prepare())
        self._pending = unsent
        self._spool_pending()
        lost = sum(e.events for e in self._pending)
        self._pending = []
        self.stats.pending_events = 0
        self.stats.dropped_spool_full += lost
        if lost:
            log.warning("promptprof.dropped_spool_full", events=lost)
        spool.close()
        self._spool = None


def _partition_count(producer: AIOKafkaProducer | None, topic: str) -> int | None:
    """The topic's partition count in the producer's metadata (None when unknown)."""
    if producer is None:
        return None
    partitions = producer.client.cluster.partitions_for_topic(topic)
    return len(partitions) if partitions else None


def producer_options(settings: Settings) -> dict[str, Any]:
    """The aiokafka producer options the sender uses (benchmarks reuse them for a fair peer)."""
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
