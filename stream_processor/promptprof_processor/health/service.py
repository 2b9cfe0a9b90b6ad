"""The worker's health task: the probe endpoint, self-metric points and pipeline alerts.

Every ``health.interval_s`` it samples the worker (:class:`~.probe.WorkerProbe`), queues the
sample's points for InfluxDB, and judges the pipeline rules (:mod:`.rules`), whose alerts go to
the alert dispatcher like any other (its receivers, routes and dead letters). The points are
written by a task of their own through the sink's :class:`~promptprof_processor.sink.influx.
RetryingWriter`, so an InfluxDB outage delays them (at most ``max_pending_lines`` are held; the
oldest go first, counted) but never the samples, the endpoint or the alerts. The producer rules
read InfluxDB (:mod:`.status`) and are judged by one worker only, the one that owns partition 0
of the calls topic, so that each producer alert is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog
from aiohttp import web

from promptprof_processor.alerts import AlertDispatcher
from promptprof_processor.alerts.events import Alert
from promptprof_processor.health.figures import WorkerFigures, worker_lines
from promptprof_processor.health.probe import WorkerProbe
from promptprof_processor.health.rules import (
    PRODUCER_RULES,
    WORKER_RULES,
    Incidents,
    WorkerJudge,
    producer_conditions,
)
from promptprof_processor.health.server import serve
from promptprof_processor.health.status import read_producers
from promptprof_processor.report.influxql import InfluxQLClient, InfluxQLError
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.influx import RetryingWriter, make_writer

log = structlog.get_logger("promptprof.health")

WRITE_BATCH = 5000
LEADER_PARTITION = 0


class HealthService:
    """Runs the endpoint, writes the samples and judges the pipeline rules."""

    def __init__(
        self, settings: ProcessorSettings, probe: WorkerProbe,
        dispatcher: AlertDispatcher | None,
    ) -> None:
        """The health task of a worker whose parts ``probe`` reads."""
        self.settings, self.probe, self.dispatcher = settings, probe, dispatcher
        self.health = settings.health
        self.writer = RetryingWriter(make_writer(settings.influx))
        self.pending: deque[str] = deque()
        self.address: Any = None
        self.judge = WorkerJudge(self.health.alerts)
        self.incidents = Incidents(self.health.interval_s)
        self._queued = asyncio.Event()

    async def run(self) -> None:
        """Serve and sample until cancelled."""
        runner = await self._serve()
        writing = asyncio.create_task(self._write_loop(), name="promptprof-health-writer")
        try:
            while True:
                await self.check()
                await asyncio.sleep(self.health.interval_s)
        finally:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
            await self.writer.close()
            if runner is not None:
                await runner.cleanup()

    async def _serve(self) -> web.AppRunner | None:
        """Start the endpoint; a port in use is logged, not fatal (the worker still counts)."""
        if self.health.port is None:
            return None
        try:
            runner, self.address = await serve(self.probe, self.health.host, self.health.port)
        except OSError as exc:
            log.error("promptprof.health_unserved", host=self.health.host,
                      port=self.health.port, error=repr(exc))
            return None
        log.info("promptprof.health_listening", address=str(self.address))
        return runner

    async def check(self) -> WorkerFigures:
        """One sample: queue its points, judge the rules, submit the alerts."""
        self.probe.health_write_failures = self.writer.failures
        figures = await self.probe.sample()
        self._queue(worker_lines(figures))
        if self.dispatcher is not None and self.health.alerts.enabled:
            alerts = await self._judge(figures)
            if alerts:
                self.dispatcher.submit(alerts)
        return figures

    async def _judge(self, figures: WorkerFigures) -> list[Alert]:
        holding = self.judge.conditions(figures)
        rules = set(WORKER_RULES)
        if LEADER_PARTITION in self.probe.calls.owned:
            try:
                producers = await asyncio.to_thread(self._producers)
            except InfluxQLError as exc:  # judged again at the next check
                log.info("promptprof.producers_unread", error=str(exc)[:300])
            else:
                holding += producer_conditions(producers, self.health.alerts)
                rules |= PRODUCER_RULES
        return self.incidents.update(holding, rules, figures.time_ns)

    def _producers(self) -> Any:
        with InfluxQLClient(self.settings.influx) as client:
            return read_producers(client, self.health.alerts)

    def _queue(self, lines: list[str]) -> None:
        self.pending.extend(lines)
        excess = len(self.pending) - self.health.max_pending_lines
        for _ in range(max(0, excess)):
            self.pending.popleft()
        self.probe.health_lines_dropped += max(0, excess)
        self._queued.set()

    async def _write_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self.pending:
                lines = [self.pending.popleft()
                         for _ in range(min(WRITE_BATCH, len(self.pending)))]
                # retried while InfluxDB is down; refused for good: logged by the writer, dropped
                if not await self.writer.write(lines):
                    self.probe.health_lines_dropped += len(lines)
