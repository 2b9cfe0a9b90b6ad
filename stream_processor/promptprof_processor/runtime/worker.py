"""The worker process: a Faust app running the calls worker, the sink and the alert dispatcher.

Calls come in from the calls topic, one :class:`~promptprof_processor.runtime.partition.
PartitionRun` per assigned partition aggregates them (:mod:`promptprof_processor.runtime.adapter`
reads the topic and keeps the checkpoints), closed windows go to the windows topic, and the sink
(:mod:`promptprof_processor.sink.consumer`) writes them to InfluxDB. A crashed part ends the
process with a non-zero exit (:func:`~promptprof_processor.runtime.adapter.fatal`).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from promptprof_processor.alerts import AlertDispatcher
from promptprof_processor.health.probe import WorkerProbe, default_worker_name
from promptprof_processor.health.producers import ProducerStatsSink
from promptprof_processor.health.service import HealthService
from promptprof_processor.runtime.adapter import (
    CallsWorker,
    GroupTimings,
    fatal,
    leave_groups_in_generation_zero,
    wait_for_kafka,
)
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.consumer import WindowSink


class _App(faust.App):  # type: ignore[misc]  # Faust is untyped here
    def _crash(self, reason: BaseException) -> None:
        fatal("a Faust service", reason)


class _Worker(faust.Worker):  # type: ignore[misc]
    def _crash(self, reason: BaseException) -> None:
        fatal("the Faust worker", reason)


def build_app(settings: ProcessorSettings) -> faust.App:
    """A Faust app running the calls worker, the sink and the alert dispatcher."""
    worker = settings.worker
    Path(worker.data_dir).mkdir(parents=True, exist_ok=True)
    app = _App(
        # Faust's own consumer joins the group of the app's id (for its leader topic): the
        # worker's group, the one that reads the calls topic, is ``app_id`` itself.
        f"{worker.app_id}-faust",
        broker=";".join(f"kafka://{b}" for b in settings.kafka.bootstrap_servers.split(",")),
        store="memory://",
        web_enabled=worker.web_port is not None,
        web_port=worker.web_port or 6066,
        datadir=worker.data_dir,
        autodiscover=False,
    )
    dispatcher = AlertDispatcher(settings, settings.alerts) if settings.alerts.enabled else None
    calls = CallsWorker(settings, _timings(app), dispatcher)
    app.task(_guarded("the calls worker", calls.run))

    @app.on_before_shutdown.connect
    async def stop_calls(app: faust.App, **_: Any) -> None:
        await calls.stop()
        if dispatcher is not None:
            await dispatcher.close(timeout_s=5.0)

    sink = WindowSink(settings, group_id=f"{worker.app_id}-sink") if worker.sink_enabled else None
    if sink is not None:
        app.task(_guarded("the sink", lambda: sink.run(asyncio.Event())))
    if dispatcher is not None:
        app.task(_guarded("the alert dispatcher", dispatcher.run))
    if settings.health.enabled:
        _add_health(app, settings, calls, sink, dispatcher)
    return app


def _add_health(
    app: faust.App, settings: ProcessorSettings, calls: CallsWorker, sink: WindowSink | None,
    dispatcher: AlertDispatcher | None,
) -> None:
    """The health task, and the producer-stats sink when the worker sinks."""
    name = settings.health.worker_name or default_worker_name()
    health = HealthService(settings, WorkerProbe(name, calls, sink, dispatcher), dispatcher)
    app.task(_guarded("the health service", health.run))
    if sink is not None:
        stats = ProducerStatsSink(settings, group_id=f"{settings.worker.app_id}-producer-stats")
        app.task(_guarded("the producer-stats sink", stats.run))


def _guarded(what: str, run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``run`` as a Faust task whose failure ends the process (see ``fatal``)."""

    async def task() -> None:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fatal(what, exc)

    return task


def _timings(app: faust.App) -> GroupTimings:
    conf = app.conf
    return GroupTimings(
        session_timeout_ms=int(conf.broker_session_timeout * 1000),
        heartbeat_interval_ms=int(conf.broker_heartbeat_interval * 1000),
        rebalance_timeout_ms=int(conf.broker_rebalance_timeout * 1000),
        max_poll_interval_ms=int(conf.broker_max_poll_interval * 1000),
    )


def run_worker(settings: ProcessorSettings) -> int:
    """Run a worker until SIGTERM or SIGINT."""
    # Decoded envelopes make many short-lived objects; the default thresholds collect so often
    # that the collector took a quarter of the worker's time (6.6 vs 8-10 µs per event).
    gc.set_threshold(50_000, 20, 100)
    leave_groups_in_generation_zero()
    asyncio.run(wait_for_kafka(settings.kafka.client_options()))
    _Worker(build_app(settings), loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0
