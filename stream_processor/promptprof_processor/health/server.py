"""The worker's probe endpoint: ``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz``.

Served by an aiohttp server on the worker's own event loop (aiohttp comes with Faust), rendered
by prometheus-client. Not prometheus-client's ``start_http_server``: it answers from a thread of
its own, so it would keep answering for a worker whose event loop hangs, and ``/healthz`` must
fail then (a hung loop cannot answer at all). Not Faust's web server: it is off unless
``worker.web_port`` is set, it serves Faust's own pages on the same port, and its views would
tie these endpoints to Faust's web framework; a Kubernetes probe needs them whatever Faust's web
settings are.

- ``/healthz``: 200 while the calls worker runs (started, not stopped), else 503.
- ``/readyz``: 200 once the worker's partitions are assigned and each one restored from its
  checkpoint (again after every rebalance), else 503.
- ``/metrics``: the figures of :mod:`promptprof_processor.health.figures`, sampled when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptprof_processor.health.figures import PartitionFigures, WorkerFigures
from promptprof_processor.health.probe import WorkerProbe

Family = type[CounterMetricFamily] | type[GaugeMetricFamily]

PARTITION_METRICS: list[tuple[str, Family, str, Callable[[PartitionFigures], float]]] = [
    ("promptprof_partition_lag_records", GaugeMetricFamily,
     "Records of the partition not yet aggregated (fetch high watermark - next offset)",
     lambda p: p.lag_records),
    ("promptprof_partition_lag_seconds", GaugeMetricFamily,
     "Age of the last record aggregated while records wait, else 0", lambda p: p.lag_s),
    ("promptprof_partition_events", CounterMetricFamily, "Events aggregated",
     lambda p: p.events),
    ("promptprof_partition_events_per_second", GaugeMetricFamily,
     "Events aggregated per second since the previous sample", lambda p: p.events_per_s),
    ("promptprof_partition_late_events", CounterMetricFamily,
     "Events that came after their window closed", lambda p: p.late_events),
    ("promptprof_partition_open_series", GaugeMetricFamily,
     "Series with an open window", lambda p: p.open_series),
    ("promptprof_partition_overflow_events", CounterMetricFamily,
     "Events routed to an overflow series", lambda p: p.overflow_events),
    ("promptprof_partition_overflowed_prompts", GaugeMetricFamily,
     "Prompts with an overflow series", lambda p: p.overflowed_prompts),
    ("promptprof_partition_checkpoint_age_seconds", GaugeMetricFamily,
     "Seconds since the partition's last checkpoint", lambda p: p.checkpoint_age_s),
]
WORKER_METRICS: list[tuple[str, Family, str, Callable[[WorkerFigures], float]]] = [
    ("promptprof_worker_ready", GaugeMetricFamily,
     "1 once the partitions are assigned and restored", lambda w: float(w.ready)),
    ("promptprof_worker_partitions", GaugeMetricFamily, "Partitions assigned",
     lambda w: len(w.partitions)),
    ("promptprof_sink_backlog_windows", GaugeMetricFamily,
     "Windows the sink has not yet written to InfluxDB", lambda w: w.sink_backlog),
    ("promptprof_sink_oldest_unwritten_seconds", GaugeMetricFamily,
     "Age of the oldest window being written, 0 when none is",
     lambda w: w.sink_oldest_unwritten_s),
    ("promptprof_influx_write_failures", CounterMetricFamily,
     "Failed InfluxDB write tries (sink, alerts, self-metrics)",
     lambda w: w.influx_write_failures),
    ("promptprof_influx_points_rejected", CounterMetricFamily,
     "Points InfluxDB refused for good", lambda w: w.influx_points_rejected),
    ("promptprof_webhook_failed_attempts", CounterMetricFamily,
     "Webhook delivery tries that failed", lambda w: w.webhook_failed_attempts),
    ("promptprof_webhook_dead_lettered", CounterMetricFamily,
     "Alerts dead-lettered after their receiver's last try", lambda w: w.webhook_dead_lettered),
    ("promptprof_alerts_dropped", CounterMetricFamily,
     "Alerts dropped from a full output queue", lambda w: w.alerts_dropped),
]


class FiguresCollector(Collector):
    """The metric families of one sample."""

    def __init__(self, figures: WorkerFigures) -> None:
        """A collector of ``figures``."""
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        """Every family, labelled ``worker`` (and ``partition``, ``stage``, ``reason``)."""
        figures = self.figures
        for name, family, text, value in WORKER_METRICS:
            metric = family(name, text, labels=["worker"])
            metric.add_metric([figures.worker], value(figures))
            yield metric
        for name, family, text, pvalue in PARTITION_METRICS:
            metric = family(name, text, labels=["worker", "partition"])
            for p in figures.partitions:
                metric.add_metric([figures.worker, str(p.partition)], pvalue(p))
            yield metric
        yield self._dead_letters()

    def _dead_letters(self) -> Metric:
        figures = self.figures
        metric = CounterMetricFamily(
            "promptprof_dead_letters", "Records dead-lettered, by stage and reason class",
            labels=["worker", "stage", "partition", "reason"])
        for p in figures.partitions:
            for reason, count in sorted(p.dead_letters.items()):
                metric.add_metric([figures.worker, "worker", str(p.partition), reason], count)
        for reason, count in sorted(figures.sink_dead_letters.items()):
            metric.add_metric([figures.worker, "sink", "", reason], count)
        metric.add_metric([figures.worker, "alerts", "", "webhook_failed"],
                          figures.webhook_dead_lettered)
        return metric


def prometheus_text(figures: WorkerFigures) -> bytes:
    """``figures`` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(figures))
    return generate_latest(registry)


def make_app(probe: WorkerProbe) -> web.Application:
    """The aiohttp application of the three endpoints."""

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_text(await probe.sample())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return _answer(probe.alive(), "alive", "the calls worker is not running")

    async def readyz(_: web.Request) -> web.Response:
        return _answer(probe.ready(), "ready", "partitions not yet assigned and restored")

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz),
                    web.get("/readyz", readyz)])
    return app


def _answer(ok: bool, yes: str, no: str) -> web.Response:
    return web.Response(status=200 if ok else 503, text=(yes if ok else no) + "\n")


async def serve(probe: WorkerProbe, host: str, port: int) -> tuple[web.AppRunner, Any]:
    """Start serving; the runner (to clean up) and the address bound."""
    runner = web.AppRunner(make_app(probe), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0]
