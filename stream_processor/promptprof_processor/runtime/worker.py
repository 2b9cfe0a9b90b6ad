"""The Faust worker: call envelopes in, closed windows out, state checkpointed in a table.

One agent consumes the calls topic. Each record (a batch envelope, or a single event) is decoded,
validated and aggregated whole (:mod:`promptprof_processor.runtime.aggregation`); windows that the
watermark closes are published to the windows topic, bad records and events to the dead-letter
topic with their reason. Every ``checkpoint_interval_s`` a partition's open-window state, with
the offset of the next record it has not aggregated, is written to a Faust table (its changelog
is what a restarted worker recovers from), and only then are the records it covers acknowledged.

The worker resumes from the offset in the checkpoint, not from Faust's committed offset: each
record is aggregated exactly once into the state it is saved with, whatever Faust delivers twice
or drops around a rebalance (:mod:`promptprof_processor.runtime.position`). Committed offsets only
say
where fetching starts. A crash re-sends at most the windows closed since the last checkpoint,
and a re-sent window overwrites its own point in InfluxDB.

A broker that lost its data (a memory-only broker restarted) starts every log again at offset 0
and forgets the group's commits and the changelog. The worker notices when its next checkpoint
lands at a changelog offset below the previous one: it keeps the open windows and reads the
partition's new log from its start. Partitions without a checkpoint are read from their start.

The sink (:mod:`promptprof_processor.sink.consumer`) runs in the same worker as a background task.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import faust
import structlog

from promptprof_processor.alerts import AlertDispatcher
from promptprof_processor.runtime.aggregation import Aggregation
from promptprof_processor.runtime.transport import leave_groups_in_generation_zero, worker_consumer
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.consumer import WindowSink

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
    dispatcher = AlertDispatcher(settings, settings.alerts) if settings.alerts.enabled else None
    work = Aggregation(app, settings, table, windows_topic, dead_topic, dispatcher)

    @app.agent(calls)
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():
            await work.handle(event)

    @app.timer(interval=1.0)
    async def close_idle_windows() -> None:
        work.close_idle()

    @app.task
    async def checkpoint_quiet_partitions() -> None:
        # A plain loop, not an app.timer: Faust stops its timers as soon as shutdown starts,
        # and only then waits for the unacked events.
        while True:
            await asyncio.sleep(min(1.0, worker.checkpoint_interval_s))
            await work.checkpoint_quiet()

    @app.task
    async def catch_up_stalled_partitions() -> None:
        while True:
            await asyncio.sleep(worker.stall_check_s)
            await work.catch_up_stalled()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        work.revoke(revoked)

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
