"""Self-metric figures: dead-letter reason classes from the reader's real reasons, the
Prometheus text, the producer stats event and its InfluxDB point, and a reporter that never
hurts its host."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from promptprof import load_settings
from promptprof._selfstats import StatsReporter, stats_event
from promptprof_processor.health.figures import (
    PartitionFigures,
    WorkerFigures,
    reason_class,
    worker_lines,
)
from promptprof_processor.health.probe import WorkerProbe
from promptprof_processor.health.producers import parse_stats
from promptprof_processor.health.server import make_app, prometheus_text
from promptprof_processor.ingest.records import RecordReader
from promptprof_processor.runtime.adapter import CallsWorker, GroupTimings
from promptprof_processor.settings import ProcessorSettings, WindowSettings

NOW_NS = time.time_ns()


def _reasons(value: bytes | None) -> set[str]:
    reader = RecordReader(WindowSettings(), max_record_bytes=1000)
    return {reason_class(r.reason) for r in reader.read(value, NOW_NS).rejected}


def test_reason_classes_of_the_readers_own_reasons() -> None:
    assert _reasons(None) == {"empty_record"}
    assert _reasons(b"x" * 2000) == {"oversized_record"}
    assert _reasons(b"not json") == {"not_json"}
    assert _reasons(b"[1, 2]") == {"bad_envelope"}
    assert _reasons(b'{"envelope": "nope", "v": 9}') == {"bad_envelope"}
    assert _reasons(b'{"schema_version": 1}') == {"invalid_event"}


FIGURES = WorkerFigures(
    "w1", NOW_NS, True,
    [PartitionFigures(3, 7, 1.5, 100, 20.0, 2, 4, 0, 0, 0.5, 107, {"not_json": 2})],
    sink_backlog=9, sink_oldest_unwritten_s=3.0, sink_dead_letters={"not_a_window": 1},
    webhook_dead_lettered=4)


def test_prometheus_text_holds_every_figure_with_its_labels() -> None:
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(prometheus_text(FIGURES).decode())
               for s in f.samples}
    partition = (("partition", "3"), ("worker", "w1"))
    assert samples[("promptprof_partition_lag_records", partition)] == 7
    assert samples[("promptprof_partition_events_total", partition)] == 100
    assert samples[("promptprof_sink_backlog_windows", (("worker", "w1"),))] == 9
    dead = {dict(k[1])["reason"]: v for k, v in samples.items()
            if k[0] == "promptprof_dead_letters_total"}
    assert dead == {"not_json": 2, "not_a_window": 1, "webhook_failed": 4}


def test_worker_lines_tag_worker_and_partition() -> None:
    lines = worker_lines(FIGURES)
    assert lines[0].startswith("promptprof_worker,worker=w1 ")
    assert lines[1].startswith("promptprof_partition,partition=3,worker=w1 ")
    assert "lag_records=7i" in lines[1]
    assert FIGURES.dead_letters == 7


def test_a_stats_event_round_trips_to_a_point() -> None:
    settings = load_settings(producer={"service_name": "svc", "environment": "prod"})
    stats = {"recorded": 10, "sent_events": 8, "dropped": 2, "sender_alive": True,
             "last_error": "boom", "queued": 10}
    event = stats_event(stats, settings, started_ns=NOW_NS, final=True)
    parsed = parse_stats(orjson.dumps(event))
    assert parsed is not None
    line = parsed.line()
    assert line.startswith("promptprof_producer,environment=prod,host=")
    assert "dropped=2.0" in line and "final=true" in line and 'last_error="boom"' in line
    assert parse_stats(b"not json") is None
    assert parse_stats(orjson.dumps({**event, "stats": {"Bad Name": 1}})) is None


def test_the_reporter_never_raises_and_stops_at_once_without_kafka() -> None:
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"},
                             producer={"stats_interval_s": 0.05})

    def broken() -> dict[str, object]:
        raise RuntimeError("stats unreadable")

    for read in (broken, lambda: {"recorded": 1}):
        reporter = StatsReporter(read, settings)
        reporter.start()
        deadline = time.monotonic() + 10
        while reporter.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        reporter.stop()
        assert time.monotonic() - started < 1.0  # no final report when Kafka was never reached
        assert reporter.failures >= 2 and reporter.sent == 0


async def _answers(calls: CallsWorker) -> tuple[int, int]:
    app = make_app(WorkerProbe("w", calls))
    async with TestClient(TestServer(app)) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        return health.status, ready.status


def test_probes_answer_503_until_alive_and_restored() -> None:
    async def run() -> list[tuple[int, int]]:
        calls = CallsWorker(ProcessorSettings(), GroupTimings(), None)
        seen = [await _answers(calls)]  # not started
        calls.consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")  # started, unassigned
        seen.append(await _answers(calls))
        calls.ready = True  # what on_partitions_assigned sets once every partition is restored
        seen.append(await _answers(calls))
        calls.stopped.set()
        seen.append(await _answers(calls))
        return seen

    assert asyncio.run(run()) == [(503, 503), (200, 503), (200, 200), (503, 503)]
