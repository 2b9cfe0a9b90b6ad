"""The Faust worker: call envelopes in, closed windows out, state checkpointed in a table.

One agent consumes the calls topic. Each record (a batch envelope, or a single event) is decoded,
validated and aggregated whole by :class:`PartitionWindows`; windows that the watermark closes
are published to the windows topic, bad records and events to the dead-letter topic with their
reason. Every ``checkpoint_interval_s`` a partition's open-window state, with the offset of the
next record it has not aggregated, is written to a Faust table (its changelog is what a restarted
worker recovers from), and only then are the records it covers acknowledged.

The worker resumes from the offset in the checkpoint, not from Faust's committed offset: each
record is aggregated exactly once into the state it is saved with, whatever Faust delivers twice
or drops around a rebalance (:mod:`promptprof_processor.offsets`). Committed offsets only say
where fetching starts. A crash re-sends at most the windows closed since the last checkpoint,
and a re-sent window overwrites its own point in InfluxDB.

A broker that lost its data (a memory-only broker restarted) starts every log again at offset 0
and forgets the group's commits and the changelog. The worker notices when its next checkpoint
lands at a changelog offset below the previous one: it keeps the open windows and reads the
partition's new log from its start. Partitions without a checkpoint are read from their start.

The sink (:mod:`promptprof_processor.sink`) runs in the same worker as a background task.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import faust
import structlog
from aiokafka.errors import KafkaError
from faust.types import TP

from promptprof_processor.aggregate import WindowAggregate
from promptprof_processor.alerts import AlertDispatcher, AlertEngine
from promptprof_processor.checkpoint import Checkpoint
from promptprof_processor.gaps import GapNotRead, read_gap
from promptprof_processor.offsets import PartitionCursors, Verdict
from promptprof_processor.outbox import Outbox, Outgoing, deliver
from promptprof_processor.partitions import DeadLetter, PartitionWindows
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink import WindowSink
from promptprof_processor.transport import leave_groups_in_generation_zero, worker_consumer

log = structlog.get_logger("promptprof.worker")

def build_app(settings: ProcessorSettings) -> faust.App:
    """A Faust app with the aggregation agent, alerting, the idle timer and the sink task."""
    worker = settings.worker
    Path(worker.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        worker.app_id,
        broker=";".join(f"kafka://{b}" for b in settings.kafka.bootstrap_servers.split(",")),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # Envelopes are up to 900 kB: a 1 MiB fetch left the worker idle a quarter of the time.
        consumer_max_fetch_size=8 * 1_048_576,
        broker_commit_interval=worker.checkpoint_interval_s,
        # The table lives in memory: the check only trips when the changelog was emptied under
        # a running worker (a broker that lost its data), and then it crashed the worker.
        recovery_consistency_check=False,
        web_enabled=worker.web_port is not None,
        web_port=worker.web_port or 6066,
        datadir=worker.data_dir,
        autodiscover=False,
    )
    app.transport.Consumer = worker_consumer(worker.fetch_max_wait_ms)
    topics = settings.topics
    calls = app.topic(topics.calls, value_type=bytes, partitions=topics.partitions)
    windows_topic = app.topic(settings.topics.windows, value_type=bytes)
    dead_topic = app.topic(settings.topics.dead_letter, value_type=bytes)
    table = app.Table(
        "window-state", default=None, partitions=settings.topics.partitions,
        key_type=bytes, value_type=bytes,
    )
    state = PartitionWindows(settings.windows, idle_timeout_s=worker.idle_timeout_s)
    engine = AlertEngine.from_settings(settings.alerts)
    dispatcher = AlertDispatcher(settings, settings.alerts) if settings.alerts.enabled else None

    client_options = settings.kafka.client_options()
    unacked: dict[int, list[Any]] = {}
    outbox = Outbox()
    cursors = PartitionCursors()
    last_checkpoint: dict[int, float] = {}
    changelog_offsets: dict[int, int] = {}  # the last written per partition, kept across revokes
    revocations: dict[int, int] = {}
    stall_checked: dict[int, int] = {}  # the position a partition had at the last stall check
    behind: set[int] = set()  # stalled partitions whose log holds more
    gap_retry_at: dict[int, float] = {}  # no gap reads for a partition before (monotonic)
    checkpointing = asyncio.Lock()

    def publish(partition: int, closed: list[WindowAggregate], dead: list[DeadLetter]) -> None:
        records = [Outgoing(windows_topic, w.to_bytes(), key=_window_key(w)) for w in closed]
        records.extend(
            Outgoing(dead_topic, letter.value,
                     headers={"reason": letter.reason[:1000].encode(), "stage": b"worker"})
            for letter in dead
        )
        outbox.send(partition, records)
        if dispatcher is not None and closed:
            dispatcher.submit(engine.observe(closed, partition))

    async def save(partition: int, value: bytes) -> bool:
        # One record per checkpoint, delivered before the next: Tansu reports a log's end as
        # the last batch's first offset + 1, and Faust's recovery reads only up to that end, so
        # a batch of two checkpoints restored the older one (the newer one's calls were lost).
        # Returns False when the changelog's offsets went back: the broker lost its logs.
        key = _state_key(partition)
        table.data[key] = value
        written = await table.send_changelog(partition, key, value)
        previous = changelog_offsets.get(partition, -1)
        changelog_offsets[partition] = written.offset
        return bool(written.offset > previous)

    async def checkpoint_due(partition: int) -> None:
        # Checkpoint, then ack what it covers. The partition is explicit (not taken from the
        # current event) so that the idle timer can checkpoint too: Faust waits for every
        # unacked event before a rebalance or shutdown completes, and without new records the
        # agent alone would never ack the last ones.
        now = time.monotonic()
        if now - last_checkpoint.get(partition, 0.0) < worker.checkpoint_interval_s:
            return
        last_checkpoint[partition] = now
        async with checkpointing:
            if state.owns(partition):
                await checkpoint(partition)

    async def checkpoint(partition: int) -> None:
        # Taken at once, as the agent goes on during the wait: the records covered, the
        # windows and dead letters they produced, and the state and position they reached.
        covered, sent = unacked.pop(partition, []), outbox.take(partition)
        saved = Checkpoint(state.checkpoint(partition), engine.state_bytes(partition),
                           cursors.next_offset(partition))
        owner = revocations.get(partition, 0)
        # The state may not be saved before the broker has the windows it no longer holds.
        await deliver(sent)
        if revocations.get(partition, 0) != owner:
            return  # revoked meanwhile: acks now would commit offsets for the next owner
        if not await save(partition, saved.pack()):
            await read_again(partition)
        for pending in covered:
            pending.ack()

    async def read_again(partition: int) -> None:
        # The broker lost its data (a memory-only broker restarted): the calls log starts
        # again at offset 0, and the position saved with the state points into the old one.
        # Keep the open windows (their calls were counted), read the new log from its start.
        tp = TP(settings.topics.calls, partition)
        start = await earliest(tp)
        if not state.owns(partition):
            return  # revoked during the wait: its next owner restores it
        log.warning("promptprof.broker_lost_data", partition=partition,
                    old_next_offset=cursors.next_offset(partition), new_next_offset=start)
        cursors.start(partition, start)
        await save(partition, Checkpoint(state.checkpoint(partition),
                                         engine.state_bytes(partition), start).pack())

    async def restore(tp: TP) -> None:
        saved = Checkpoint.unpack(table.get(_state_key(tp.partition)))
        next_offset = saved.next_offset
        if next_offset is None:
            next_offset = await earliest(tp)
        if tp not in app.consumer.assignment() or state.owns(tp.partition):
            return  # revoked, or restored by the stall check, during the wait
        state.restore(tp.partition, saved.windows)
        engine.restore(tp.partition, saved.alerts)
        cursors.start(tp.partition, next_offset)
        log.info("promptprof.partition_restored", partition=tp.partition,
                 next_offset=next_offset, from_checkpoint=saved.next_offset is not None)

    async def earliest(tp: TP) -> int:
        delay = 0.1
        while True:
            try:
                return int((await app.consumer.earliest_offsets(tp)).get(tp, 0))
            except (KafkaError, TimeoutError) as exc:
                log.warning("promptprof.offsets_unavailable", partition=tp.partition,
                            error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def take(partition: int, offset: int, value: bytes | None) -> None:
        outcome = state.handle(partition, value)
        cursors.taken(partition, offset)
        publish(partition, outcome.closed, outcome.dead)

    async def fill_gap(tp: TP, offset: int) -> bool:
        # Records before ``offset`` never came: read them ourselves (see gaps.py).
        start = cursors.next_offset(tp.partition)
        try:
            gap = await read_gap(client_options, tp.topic, tp.partition, start, offset)
        except (GapNotRead, KafkaError) as exc:
            log.warning("promptprof.gap_not_read", partition=tp.partition, start=start,
                        end=offset, error=repr(exc))
            gap_retry_at[tp.partition] = time.monotonic() + worker.stall_check_s
            return False
        if not state.owns(tp.partition):
            return False  # revoked during the read
        if cursors.next_offset(tp.partition) != start:  # moved on (or restarted) meanwhile
            return cursors.judge(tp.partition, offset) is Verdict.TAKE
        skipped = 0
        for record_offset, value in gap.records:
            # an offset the log lacks (expired, or lost by the broker) cannot come later
            skipped += cursors.skip_to(tp.partition, record_offset)
            if cursors.judge(tp.partition, record_offset) is Verdict.TAKE:
                take(tp.partition, record_offset, value)
        if gap.complete:
            skipped += cursors.skip_to(tp.partition, offset)
        if skipped:
            log.warning("promptprof.offsets_skipped", partition=tp.partition, offsets=skipped,
                        reason="not in the log: expired, or lost by the broker")
        log.info("promptprof.gap_read", partition=tp.partition, start=start, end=offset,
                 records=len(gap.records), complete=gap.complete)
        if not gap.complete:
            # The broker does not serve the whole range (yet): the record may be from a log
            # it lost since. Not every record after it tries again; the stall check does.
            gap_retry_at[tp.partition] = time.monotonic() + worker.stall_check_s
            return False
        return cursors.judge(tp.partition, offset) is Verdict.TAKE

    async def admit(tp: TP, offset: int) -> bool:
        # Whether the record is the partition's next one; see offsets.py for why Faust's
        # delivery order is not trusted.
        if not state.owns(tp.partition):
            await restore(tp)
            if not state.owns(tp.partition):
                return False
        verdict = cursors.judge(tp.partition, offset)
        if verdict is Verdict.AHEAD and time.monotonic() >= gap_retry_at.get(tp.partition, 0.0):
            return await fill_gap(tp, offset)
        return verdict is Verdict.TAKE

    @app.agent(calls)
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():
            tp, offset = event.message.tp, event.message.offset
            if tp not in app.consumer.assignment():
                continue  # fetched before its partition was revoked: the next owner has it
            if await admit(tp, offset):
                take(tp.partition, offset, event.value)
            unacked.setdefault(tp.partition, []).append(event)
            await checkpoint_due(tp.partition)

    async def catch_up(tp: TP) -> None:
        # Faust now and then stops delivering a partition altogether (seen after a broker
        # restart: rewound, and then nothing fetched). A partition whose position has not
        # moved since the last check while its log holds more is read by the worker itself,
        # and is not idle meanwhile (the idle timer would close its windows by the clock).
        if app.rebalancing:
            return
        if not state.owns(tp.partition):
            await restore(tp)
            if not state.owns(tp.partition):
                return
        position = cursors.next_offset(tp.partition)
        if stall_checked.get(tp.partition) != position:
            stall_checked[tp.partition] = position
            behind.discard(tp.partition)
            return
        end = (await app.consumer.highwaters(tp)).get(tp, 0)
        if end <= position or not state.owns(tp.partition):
            behind.discard(tp.partition)
            return
        behind.add(tp.partition)
        log.warning("promptprof.partition_stalled", partition=tp.partition,
                    next_offset=position, log_end=end)
        await fill_gap(tp, end)

    @app.task
    async def catch_up_stalled_partitions() -> None:
        while True:
            await asyncio.sleep(worker.stall_check_s)
            for tp in app.consumer.assignment():
                if tp.topic != settings.topics.calls:
                    continue
                try:
                    await catch_up(tp)
                except (KafkaError, TimeoutError) as exc:
                    log.warning("promptprof.stall_check_failed", partition=tp.partition,
                                error=repr(exc))

    @app.timer(interval=1.0)
    async def close_idle_windows() -> None:
        for partition, windows in state.close_idle(behind=behind).items():
            publish(partition, windows, [])

    @app.task
    async def checkpoint_quiet_partitions() -> None:
        # A plain loop, not an app.timer: Faust stops its timers as soon as shutdown starts,
        # and only then waits for the unacked events.
        while True:
            await asyncio.sleep(min(1.0, worker.checkpoint_interval_s))
            for partition in [p for p, events in unacked.items() if events and state.owns(p)]:
                await checkpoint_due(partition)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == settings.topics.calls:
                state.forget(tp.partition)
                engine.forget(tp.partition)
                cursors.forget(tp.partition)
                outbox.forget(tp.partition)
                revocations[tp.partition] = revocations.get(tp.partition, 0) + 1
                behind.discard(tp.partition)
                # Not acked: Faust forgets its acks of a revoked partition, so a late ack
                # would commit this owner's offsets under the next assignment (after a broker
                # restart, offsets of the lost log). Faust holds unacked events weakly.
                unacked.pop(tp.partition, None)

    if worker.sink_enabled:
        sink = WindowSink(settings, group_id=f"{worker.app_id}-sink")

        @app.task
        async def run_sink() -> None:
            await sink.run(asyncio.Event())

    if dispatcher is not None:

        @app.task
        async def run_alerts() -> None:
            await dispatcher.run()

        @app.on_before_shutdown.connect
        async def close_alerts(app: faust.App, **_: Any) -> None:
            await dispatcher.close(timeout_s=5.0)

    return app


async def wait_for_kafka(bootstrap: str, max_delay_s: float = 10.0) -> None:
    """Retry with backoff until Kafka answers: Faust itself gives up at once when it cannot."""
    from promptprof.stack.tansu import kafka_ready

    delay, attempts = 0.5, 0
    while not await kafka_ready(bootstrap, timeout_s=5.0):
        attempts += 1
        log.warning("promptprof.worker_kafka_unreachable", bootstrap=bootstrap,
                    attempts=attempts, retry_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def _state_key(partition: int) -> bytes:
    return b"p%d" % partition


def _window_key(window: WindowAggregate) -> bytes:
    tags = window.series
    return "\x1f".join(
        (tags.service, tags.prompt_id, tags.prompt_version, tags.model, str(window.width_s))
    ).encode()


def run_worker(settings: ProcessorSettings) -> int:
    """Run a worker until SIGTERM or SIGINT."""
    # Decoded envelopes make many short-lived objects; the default thresholds collect so often
    # that the collector took a quarter of the worker's time (6.6 vs 8-10 µs per event).
    gc.set_threshold(50_000, 20, 100)
    leave_groups_in_generation_zero()
    asyncio.run(wait_for_kafka(settings.kafka.bootstrap_servers))
    app = build_app(settings)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0
