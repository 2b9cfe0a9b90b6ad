"""The Faust worker: call envelopes in, closed windows out, state checkpointed in a table.

One agent consumes the calls topic. Each record (a batch envelope, or a single event) is decoded,
validated and aggregated whole by :class:`PartitionWindows`; windows that the watermark closes
are published to the windows topic, bad records and events to the dead-letter topic with their
reason. Every ``checkpoint_interval_s`` the partition's open-window state is written to a Faust
table (its changelog is what a restarted worker recovers from) and only then are the records
aggregated since the last checkpoint acknowledged, so a committed offset never runs ahead of
the state: no call is lost, and a crash re-counts at most one checkpoint interval of calls.

A broker that lost its data (a memory-only broker restarted) starts every log again at offset 0
and forgets the group's commits: the workers rejoin, and partitions without a commit are read
from their first offset (:mod:`promptprof_processor.rewind`).

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

from promptprof_processor.aggregate import WindowAggregate
from promptprof_processor.alerts import AlertDispatcher, AlertEngine
from promptprof_processor.offsets import HandledOffsets
from promptprof_processor.outbox import Outbox, Outgoing, deliver
from promptprof_processor.partitions import DeadLetter, PartitionWindows
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink import WindowSink
from promptprof_processor.transport import leave_groups_in_generation_zero, worker_consumer

log = structlog.get_logger("promptprof.worker")

CHECKPOINT_FORMAT = b"\x02"


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

    unacked: dict[int, list[Any]] = {}
    outbox = Outbox()
    last_checkpoint: dict[int, float] = {}
    handled: dict[int, HandledOffsets] = {}
    checkpointing = asyncio.Lock()

    async def publish(
        partition: int, closed: list[WindowAggregate], dead: list[DeadLetter]
    ) -> None:
        for window in closed:
            await outbox.send(partition, Outgoing(windows_topic, window.to_bytes(),
                                                  key=_window_key(window)))
        for letter in dead:
            headers = {"reason": letter.reason[:1000].encode(), "stage": b"worker"}
            await outbox.send(partition, Outgoing(dead_topic, letter.value, headers=headers))
        if dispatcher is not None and closed:
            dispatcher.submit(engine.observe(closed, partition))

    async def save(partition: int, value: bytes) -> None:
        # One record per checkpoint, delivered before the next: Tansu reports a log's end as
        # the last batch's first offset + 1, and Faust's recovery reads only up to that end, so
        # a batch of two checkpoints restored the older one (the newer one's calls were lost).
        key = _state_key(partition)
        table.data[key] = value
        await table.send_changelog(partition, key, value)

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
        # windows and dead letters they produced, and the state they left.
        covered, sent = unacked.pop(partition, []), outbox.take(partition)
        windows, alerts = state.checkpoint(partition), engine.state_bytes(partition)
        # Neither the state without the windows it closed, nor the offsets of the records
        # whose dead letters these are, may be committed before the broker has them.
        await deliver(sent)
        await save(partition, pack_checkpoint(windows, alerts))
        for pending in covered:
            pending.ack()

    @app.agent(calls)
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():
            partition, offset = event.message.partition, event.message.offset
            seen = handled.setdefault(partition, HandledOffsets())
            if offset in seen:
                # Already aggregated: after recovery Faust seeks to the committed offsets a
                # second time and re-delivers what was handled since the last commit.
                unacked.setdefault(partition, []).append(event)
                continue
            seen.add(offset)
            if not state.owns(partition):
                windows, alerts = unpack_checkpoint(table.get(_state_key(partition)))
                state.restore(partition, windows)
                engine.restore(partition, alerts)
            outcome = state.handle(partition, event.value)
            await publish(partition, outcome.closed, outcome.dead)
            unacked.setdefault(partition, []).append(event)
            await checkpoint_due(partition)

    @app.timer(interval=1.0)
    async def close_idle_windows() -> None:
        for partition, windows in state.close_idle().items():
            await publish(partition, windows, [])

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
                handled.pop(tp.partition, None)
                outbox.forget(tp.partition)

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


def pack_checkpoint(windows: bytes, alerts: bytes) -> bytes:
    """A partition's window and alert state as one table value."""
    return CHECKPOINT_FORMAT + len(windows).to_bytes(4, "big") + windows + alerts


def unpack_checkpoint(value: bytes | None) -> tuple[bytes | None, bytes | None]:
    """The window and alert state of a :func:`pack_checkpoint` value (None, None for none or
    for a value of another format: the partition then starts empty, with a warning)."""
    if not value or value[:1] != CHECKPOINT_FORMAT or len(value) < 5:
        if value:
            log.warning("promptprof.checkpoint_discarded", reason="unknown checkpoint format")
        return None, None
    size = int.from_bytes(value[1:5], "big")
    return value[5 : 5 + size], value[5 + size :]


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
