"""The one adapter between the partition runs and Kafka, inside a Faust worker.

Faust runs the worker: the app, its lifecycle and signals, the web server, the sink and alert
tasks. The calls topic is read, and checkpoints are kept, by aiokafka clients of this module
(one consumer in the worker's group, one producer), run as one Faust task. Everything below
works around Faust, aiokafka or the local broker, and lives here only:

1. Faust's stream consumption is replaced. A Faust agent spent about 100 µs of wall time per
   record (30 times a bare consumer); around a rebalance Faust resumed partitions before seeking
   them, counted an offset jump as acknowledged, and dropped re-fetched records below its read
   offset, each of which lost calls now and then. A plain consumer is seeked where the run's
   checkpoint says and delivers the log in order.
2. Faust tables are replaced by the two checkpoint topics of
   :mod:`promptprof_processor.runtime.checkpoint`: a table value is one record, and a partition's
   checkpoint outgrew Kafka's 1 MB request size at a few hundred series; Faust's table recovery
   reads up to the end ListOffsets reports, which Tansu answers as the newest batch's first
   offset + 1. The store reads up to the fetch response's high watermark, which is right.
3. aiokafka leaves its group on stop only from generation 1 on; Tansu numbers its first
   generation 0, so a stopped worker stayed in the group until its session timed out
   (:func:`leave_groups_in_generation_zero`).
4. After a crash in one of its services, mode's worker logs "We experienced a crash" and hangs,
   a live process that counts nothing: a fatal failure here ends the process with
   :data:`EXIT_FATAL` and one log line (:func:`fatal`), for its supervisor to restart it.
5. A broker that lost its data (a memory-only broker restarted) answers fetches past its new
   log's end with no records and no error: a position past the high watermark for
   ``LostLogs.grace_s`` restarts the run at the log's start, and its next checkpoint is a base.
6. Tansu answers a long poll only when the fetch wait is over: the wait is
   ``worker.fetch_max_wait_ms`` (100 ms), not aiokafka's 500 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.group import LeaveGroupRequest

from promptprof._backoff import Backoff
from promptprof_processor.alerts import AlertDispatcher, AlertEngine
from promptprof_processor.health.figures import reason_class
from promptprof_processor.lost_log import LostLogs
from promptprof_processor.runtime.checkpoint import Head, assemble, cut
from promptprof_processor.runtime.partition import Clock, Epoch, Output, PartitionRun
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.windows.aggregator import StateError
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_processor.windows.late_scores import QualityUpdate

log = structlog.get_logger("promptprof.worker")

EXIT_FATAL = 70  # EX_SOFTWARE
# A dead letter keeps the record whole up to this size, else a prefix (the broker's limit is 1 MB).
DEAD_LETTER_MAX_BYTES = 900_000
DEAD_LETTER_PREFIX_BYTES = 65_536
FETCH_MAX_BYTES = 8 * 1_048_576
OUTPUT_BATCH_BYTES = 1_000_000
# Outputs on their way to the broker at most: closing many series at once is a burst of records,
# sent as the broker takes them (each pending send holds its record and a future).
MAX_OUTPUTS_IN_FLIGHT = 20_000
MAINTENANCE_S = 1.0  # how often idle windows, lost logs and due checkpoints are looked at
# Open windows (series x base windows, all partitions) beyond which the runs' work goes to a thread.
THREAD_ABOVE = 50_000

T = TypeVar("T")


def fatal(what: str, exc: BaseException) -> NoReturn:
    """End the process at once with one log line: a worker that stopped counting must not stay
    up. What it had not checkpointed is read again by the next worker."""
    log.critical("promptprof.worker_failed", failed=what, error=repr(exc), exit_code=EXIT_FATAL)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_FATAL)


@dataclass(frozen=True, slots=True)
class GroupTimings:
    """The consumer group's timings, in ms (Faust's settings, so its environment applies)."""

    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    rebalance_timeout_ms: int = 60_000
    max_poll_interval_ms: int = 1_000_000


class CheckpointStore:
    """The checkpoint topics of one app: chunks and heads, partitioned like the calls topic."""

    def __init__(self, producer: AIOKafkaProducer, options: dict[str, Any], app_id: str) -> None:
        """Write with ``producer``; read with consumers made from ``options``."""
        self.producer, self.options = producer, options
        self.chunks, self.heads = f"{app_id}-checkpoint-chunks", f"{app_id}-checkpoint-heads"

    async def load(self, partition: int) -> tuple[Head, list[dict[str, Any]]] | None:
        """The newest checkpoint of ``partition``, or None when it has none."""
        head = None
        for _, value in await self._read(self.heads, partition, 0, None):
            head = Head.unpack(value) or head
        if head is None:
            return None
        records = await self._read(self.chunks, partition, head.base_offset, head.end_offset)
        return head, assemble(head, records)

    async def write(self, partition: int, run: PartitionRun, epoch: Epoch) -> tuple[Head, int]:
        """Write an epoch's chunks, then its head; return the head and the chunks' size."""
        chunks = cut(run.run_id, epoch.epoch, epoch.document)
        sent = [await self.producer.send(self.chunks, c.pack(), partition=partition)
                for c in chunks]
        offsets = [(await delivery).offset for delivery in sent]
        previous = run.head
        if previous is not None and offsets[0] < previous.end_offset and not epoch.base:
            raise LostCheckpoints(partition)
        base = offsets[0] if epoch.base or previous is None else previous.base_offset
        head = Head(run.run_id, epoch.epoch, epoch.next_offset, base, offsets[-1] + 1)
        await self.producer.send_and_wait(self.heads, head.pack(), partition=partition)
        return head, sum(len(c.data) for c in chunks)

    async def _read(
        self, topic: str, partition: int, start: int, end: int | None
    ) -> list[tuple[int, bytes | None]]:
        """The records of ``[start, end)`` (to the high watermark when ``end`` is None)."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100,
            max_partition_fetch_bytes=FETCH_MAX_BYTES, fetch_max_bytes=FETCH_MAX_BYTES,
            **self.options)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            records: list[tuple[int, bytes | None]] = []
            while True:
                batch = await consumer.getmany(tp, timeout_ms=200)
                records.extend((r.offset, r.value) for r in batch.get(tp, []))
                # the log's end, or short of ``end`` when the log lacks records (then the
                # checkpoint's assembly says which)
                served = consumer.highwater(tp)
                stop = served if end is None or served is None else min(end, served)
                if stop is not None and await consumer.position(tp) >= stop:
                    return [(o, v) for o, v in records if end is None or o < end]
        finally:
            await consumer.stop()


class InFlight:
    """Counts the sends not yet answered by the broker, and waits for fewer."""

    def __init__(self) -> None:
        """None in flight."""
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def track(self, send: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """Count ``send`` until it is done."""
        self.count += 1
        send.add_done_callback(self._done)
        return send

    async def below(self, count: int) -> None:
        """Return once fewer than ``count`` are in flight."""
        if self.count >= count:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((count, waiter))
            await waiter

    def _done(self, _: asyncio.Future[Any]) -> None:
        self.count -= 1
        ready = [w for c, w in self._waiters if self.count < c]
        self._waiters = [(c, w) for c, w in self._waiters if self.count >= c]
        for waiter in ready:
            if not waiter.done():
                waiter.set_result(None)


class LostCheckpoints(RuntimeError):
    """The chunk log's offsets went back: the broker lost the checkpoint topics."""


@dataclass(slots=True)
class _Owned:
    run: PartitionRun
    inflight: dict[int, asyncio.Future[Any]] = field(default_factory=dict)  # id(output) ->
    last_checkpoint_s: float = 0.0
    checkpoint_cost_s: float = 0.0
    rebase: bool = False


class CallsWorker(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Reads the calls topic into one :class:`PartitionRun` per assigned partition, sends what
    the runs produce, and checkpoints them."""

    def __init__(
        self, settings: ProcessorSettings, timings: GroupTimings,
        dispatcher: AlertDispatcher | None,
    ) -> None:
        """A worker of ``settings.worker.app_id``'s group (start it with :meth:`run`)."""
        self.settings, self.timings, self.dispatcher = settings, timings, dispatcher
        self.options = settings.kafka.client_options()
        self.alerts = AlertEngine.from_settings(settings.alerts) if dispatcher else None
        if self.alerts is not None:  # windows count exactly the calls over each latency SLO
            windows = settings.windows.with_latency_thresholds(
                self.alerts.rules.latency_thresholds_ms())
            self.settings = settings.model_copy(update={"windows": windows})
        self.owned: dict[int, _Owned] = {}
        self.lost_logs = LostLogs()
        self.lock = asyncio.Lock()  # one of: a batch of records, a checkpoint, a rebalance
        self.in_flight = InFlight()
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.store: CheckpointStore | None = None
        # for the health probe: assigned and restored; dead letters by (partition, reason
        # class); the Kafka timestamp (ms) of the last record taken, by partition
        self.ready = False
        self.dead_letters: Counter[tuple[int, str]] = Counter()
        self.last_record_ms: dict[int, int] = {}

    async def run(self) -> None:
        """Consume until :meth:`stop`; checkpoint and leave the group on the way out."""
        worker = self.settings.worker
        await ensure_topics(self.settings, self.options)
        # Closing many series' windows at once is a burst of records: batch them.
        self.producer = AIOKafkaProducer(acks="all", linger_ms=5, max_batch_size=OUTPUT_BATCH_BYTES,
                                         compression_type="lz4", **self.options)
        self.consumer = AIOKafkaConsumer(
            group_id=worker.app_id, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=worker.fetch_max_wait_ms, fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=FETCH_MAX_BYTES, **_timing_options(self.timings),
            **self.options)
        self.store = CheckpointStore(self.producer, self.options, worker.app_id)
        await self.producer.start()
        await self.consumer.start()
        try:
            self.consumer.subscribe([self.settings.topics.calls], listener=self)
            await self._consume(self.consumer)
            async with self.lock:
                await self._checkpoint_all(force=True)
        finally:
            await self.consumer.stop()
            await self.producer.stop()
            self.stopped.set()

    async def stop(self, timeout_s: float = 8.0) -> None:
        """Stop consuming; returns once the last checkpoint is written and the group left, or
        after ``timeout_s`` (what was not checkpointed is read again by the next owner)."""
        self.stopping.set()
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout_s)
        except TimeoutError:
            log.warning("promptprof.stop_timed_out", timeout_s=timeout_s)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        next_maintenance = 0.0
        while not self.stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            async with self.lock:
                records = [(tp.partition, [(r.offset, r.value) for r in batch])
                           for tp, batch in batches.items()]
                for partition, owned, outputs in await self._work(self._take, records):
                    await self._send(partition, owned, outputs)
                for tp, batch in batches.items():
                    if batch:
                        self.last_record_ms[tp.partition] = batch[-1].timestamp
                if time.monotonic() >= next_maintenance:
                    next_maintenance = time.monotonic() + MAINTENANCE_S
                    await self._maintain(consumer, set(batches))

    async def _work(self, work: Callable[..., T], *args: Any) -> T:
        """Run the runs' ``work``: in a thread when they hold so many open windows that a
        window's end may close them for seconds (the loop goes on with heartbeats and sends),
        else on the loop (with few series, a thread's share of the GIL cost the loop's fetches
        a third of the worker's speed)."""
        if sum(o.run.windows.open_accumulators for o in self.owned.values()) > THREAD_ABOVE:
            return await asyncio.to_thread(work, *args)
        return work(*args)

    def _take(
        self, batches: list[tuple[int, list[tuple[int, bytes | None]]]]
    ) -> list[tuple[int, _Owned, list[Output]]]:
        """Hand each run its records."""
        taken = []
        for partition, records in batches:
            owned = self.owned.get(partition)
            if owned is None:
                continue  # fetched before its partition was revoked
            outputs: list[Output] = []
            for offset, value in records:
                outputs += owned.run.take(offset, value, _now())
            taken.append((partition, owned, outputs))
        return taken

    async def _maintain(self, consumer: AIOKafkaConsumer, fetched: set[TopicPartition]) -> None:
        for partition, owned in list(self.owned.items()):
            tp = TopicPartition(self.settings.topics.calls, partition)
            end = consumer.highwater(tp)
            owned.run.behind = end is not None and end > owned.run.next_offset
            if tp not in fetched and self.lost_logs.lost(tp, owned.run.next_offset, end):
                await self._restart_log(consumer, tp, owned)
            await self._send(partition, owned, await self._work(owned.run.close_idle, _now()))
        await self._checkpoint_all()

    async def _restart_log(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, owned: _Owned
    ) -> None:
        first = (await consumer.beginning_offsets([tp]))[tp]
        owned.run.restart_log(first)
        owned.rebase = True
        consumer.seek(tp, first)

    async def _send(self, partition: int, owned: _Owned, outputs: list[Output]) -> None:
        """Send the outputs, waiting whenever more than MAX_OUTPUTS_IN_FLIGHT are on their
        way (a failed one is sent again at the next checkpoint)."""
        alerts = [output.alert for output in outputs if output.alert is not None]
        for output in outputs:
            if output.alert is None:
                if self.in_flight.count >= MAX_OUTPUTS_IN_FLIGHT:
                    await self.in_flight.below(MAX_OUTPUTS_IN_FLIGHT // 2)
                owned.inflight[id(output)] = self._start_send(partition, output)
            if output.rejected is not None:
                self.dead_letters[(partition, reason_class(output.rejected.reason))] += 1
        if alerts and self.dispatcher is not None:
            self.dispatcher.submit(alerts)

    def _start_send(self, partition: int, output: Output) -> asyncio.Future[Any]:
        topics = self.settings.topics
        assert self.producer is not None
        window = output.window or output.quality
        if window is not None:
            send = self.producer.send(topics.windows, window.to_bytes(), key=window_key(window))
        else:
            assert output.rejected is not None
            value, headers = dead_letter(output, partition, topics.calls)
            send = self.producer.send(topics.dead_letter, value, headers=headers)
        return self.in_flight.track(asyncio.ensure_future(_sent(send)))

    async def _checkpoint_all(self, force: bool = False) -> None:
        interval = self.settings.worker.checkpoint_interval_s
        for partition, owned in list(self.owned.items()):
            # A checkpoint may take a fifth of the time at most: a large state waits longer.
            spacing = max(interval, 4 * owned.checkpoint_cost_s)
            if force or time.monotonic() - owned.last_checkpoint_s >= spacing:
                await self._checkpoint(partition, owned)

    async def _checkpoint(self, partition: int, owned: _Owned) -> None:
        assert self.store is not None and self.consumer is not None
        started = time.monotonic()
        epoch = await asyncio.to_thread(owned.run.checkpoint, rebase=owned.rebase)
        await self._deliver(partition, owned, epoch.outputs)
        try:
            head, size = await self._write(partition, owned.run, epoch)
        except LostCheckpoints:
            log.warning("promptprof.checkpoints_lost", partition=partition)
            epoch = owned.run.checkpoint(rebase=True)
            head, size = await self._write(partition, owned.run, epoch)
        owned.run.committed(epoch, head, size)
        owned.rebase = False
        owned.last_checkpoint_s = time.monotonic()
        owned.checkpoint_cost_s = owned.last_checkpoint_s - started
        log.debug("promptprof.checkpointed", partition=partition, epoch=head.epoch,
                  base=epoch.base, bytes=size, next_offset=head.next_offset)
        await self._commit(TopicPartition(self.settings.topics.calls, partition), head)

    async def _write(self, partition: int, run: PartitionRun, epoch: Epoch) -> tuple[Head, int]:
        """Write the epoch, again with backoff while the broker fails (an epoch written twice
        is read once: its chunks are told apart by their index)."""
        assert self.store is not None
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return await self.store.write(partition, run, epoch)
            except KafkaError as exc:
                delay = backoff.next()
                log.warning("promptprof.checkpoint_retried", partition=partition,
                            error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _deliver(self, partition: int, owned: _Owned, outputs: list[Output]) -> None:
        """Wait until the broker has every output, sending the failed ones again."""
        backoff = Backoff(0.1, 5.0)
        waiting = [o for o in outputs if o.alert is None]
        while waiting:
            results = await asyncio.gather(
                *(owned.inflight[id(o)] for o in waiting), return_exceptions=True)
            failed = [o for o, r in zip(waiting, results, strict=True)
                      if isinstance(r, BaseException)]
            if failed:
                delay = backoff.next()
                log.warning("promptprof.send_retried", records=len(failed), retry_in_s=delay,
                            error=repr(next(r for r in results if isinstance(r, BaseException))))
                await asyncio.sleep(delay)
                for output in failed:
                    owned.inflight[id(output)] = self._start_send(partition, output)
            waiting = failed
        for output in outputs:
            owned.inflight.pop(id(output), None)

    async def _commit(self, tp: TopicPartition, head: Head) -> None:
        # Only where the next owner starts fetching: the run's position is in the checkpoint.
        assert self.consumer is not None
        try:
            await self.consumer.commit({tp: head.next_offset})
        except KafkaError as exc:
            log.info("promptprof.commit_skipped", partition=tp.partition, error=repr(exc))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Checkpoint the revoked partitions (their next owner goes on from there), then drop
        their runs. (aiokafka only logs a listener's exception: a failure here is fatal.)"""
        self.ready = False
        try:
            async with self.lock:
                for tp in revoked:
                    await self._hand_over(tp)
        except Exception as exc:
            fatal("handing over revoked partitions", exc)

    async def _hand_over(self, tp: TopicPartition) -> None:
        owned = self.owned.pop(tp.partition, None)
        if owned is None:
            return
        try:
            await self._checkpoint(tp.partition, owned)
        except KafkaError as exc:  # its next owner goes on from the last checkpoint
            log.warning("promptprof.handover_checkpoint_failed", partition=tp.partition,
                        error=repr(exc))
        if self.alerts is not None:
            self.alerts.forget(tp.partition)
        log.info("promptprof.partition_revoked", partition=tp.partition)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Start a run for each assigned partition, from its checkpoint, and seek there.
        A checkpoint that cannot be read is fatal: starting over would count calls twice."""
        assert self.consumer is not None
        try:
            async with self.lock:
                for tp in assigned:
                    if tp.partition not in self.owned:
                        run = await self._start_run(tp)
                        self.owned[tp.partition] = _Owned(run, last_checkpoint_s=time.monotonic())
                    self.consumer.seek(tp, self.owned[tp.partition].run.next_offset)
            self.ready = True
        except Exception as exc:
            fatal("restoring assigned partitions", exc)

    async def _start_run(self, tp: TopicPartition) -> PartitionRun:
        assert self.store is not None and self.consumer is not None
        started = time.monotonic()
        saved = await self.store.load(tp.partition)
        run = self._restored(tp.partition, *saved) if saved else None
        if run is None:
            next_offset = (saved[0].next_offset if saved
                           else (await self.consumer.beginning_offsets([tp]))[tp])
            if self.alerts is not None:
                self.alerts.restore(tp.partition, None)
            run = PartitionRun(tp.partition, self.settings.windows, next_offset=next_offset,
                               alerts=self.alerts,
                               idle_timeout_s=self.settings.worker.idle_timeout_s)
        log.info("promptprof.partition_restored", partition=tp.partition,
                 next_offset=run.next_offset, from_checkpoint=saved is not None,
                 restore_s=round(time.monotonic() - started, 3))
        return run

    def _restored(
        self, partition: int, head: Head, documents: list[dict[str, Any]]
    ) -> PartitionRun | None:
        try:
            return PartitionRun.restore(partition, self.settings.windows, head, documents,
                                        alerts=self.alerts,
                                        idle_timeout_s=self.settings.worker.idle_timeout_s)
        except StateError as exc:  # other widths or label dimensions: the windows start over
            log.warning("promptprof.checkpoint_discarded", partition=partition, reason=str(exc))
            return None


async def _sent(send: Any) -> Any:
    """The broker's answer to a send: ``AIOKafkaProducer.send`` is awaited twice."""
    return await (await send)


def _now() -> Clock:
    return Clock(time.time_ns(), time.monotonic())


def _timing_options(timings: GroupTimings) -> dict[str, int]:
    return {
        "session_timeout_ms": timings.session_timeout_ms,
        "heartbeat_interval_ms": timings.heartbeat_interval_ms,
        "rebalance_timeout_ms": timings.rebalance_timeout_ms,
        "max_poll_interval_ms": timings.max_poll_interval_ms,
    }


def window_key(window: WindowAggregate | QualityUpdate) -> bytes:
    """The windows topic key of a closed window (or its quality update, which must follow
    it on its partition): its series and width."""
    tags = window.series
    return "\x1f".join(
        (tags.service, tags.prompt_id, tags.prompt_version, tags.model, str(window.width_s))
    ).encode()


def dead_letter(
    output: Output, partition: int, topic: str
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A rejected part's dead-letter value and headers: the bytes whole where they fit in a
    record, else a prefix, with where they came from and their size."""
    assert output.rejected is not None
    value, reason = output.rejected.value, output.rejected.reason
    if len(value) > DEAD_LETTER_MAX_BYTES:
        reason = f"{reason} (kept: the first {DEAD_LETTER_PREFIX_BYTES} bytes)"
        value = value[:DEAD_LETTER_PREFIX_BYTES]
    headers = [("reason", reason[:1000].encode()), ("stage", b"worker"),
               ("topic", topic.encode()), ("partition", str(partition).encode()),
               ("size", str(len(output.rejected.value)).encode())]
    if output.offset is not None:
        headers.append(("offset", str(output.offset).encode()))
    return value, headers


async def ensure_topics(settings: ProcessorSettings, options: dict[str, Any]) -> None:
    """Create the topics the worker reads and writes, where missing."""
    topics, app_id = settings.topics, settings.worker.app_id
    compacted = {"cleanup.policy": "compact"}
    wanted = [NewTopic(name, topics.partitions, 1)
              for name in (topics.calls, topics.windows, topics.dead_letter)]
    wanted += [NewTopic(f"{app_id}-checkpoint-{kind}", topics.partitions, 1,
                        topic_configs=compacted) for kind in ("chunks", "heads")]
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        for topic in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()


async def wait_for_kafka(options: dict[str, Any], max_delay_s: float = 10.0) -> None:
    """Retry with backoff until Kafka answers a metadata request."""
    backoff = Backoff(0.5, max_delay_s)
    while True:
        admin = AIOKafkaAdminClient(**options)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            delay = backoff.next()
            log.warning("promptprof.worker_kafka_unreachable",
                        bootstrap=options.get("bootstrap_servers"), error=repr(exc),
                        retry_in_s=delay)
            await asyncio.sleep(delay)
        finally:
            await admin.close()


def leave_groups_in_generation_zero() -> None:
    """Make every aiokafka consumer of this process leave its group when it stops in
    generation 0 too (Tansu numbers its first generation 0, Kafka 1)."""
    leave = GroupCoordinator._maybe_leave_group
    if getattr(leave, "in_generation_zero", False):
        return

    async def maybe_leave_group(coordinator: Any) -> None:
        if coordinator.generation == 0 and coordinator._group_instance_id is None:
            try:
                await coordinator._send_req(
                    LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
                )
            except KafkaError as exc:
                log.warning("promptprof.leave_group_failed", group=coordinator.group_id,
                            error=repr(exc))
        await leave(coordinator)  # in generation 0 this only resets the generation

    maybe_leave_group.in_generation_zero = True  # type: ignore[attr-defined]
    GroupCoordinator._maybe_leave_group = maybe_leave_group
