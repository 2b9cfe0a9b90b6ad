"""An InfluxDB database filled by the real pipeline, once per test session.

The demo's :class:`TrafficGenerator` drives simulated calls (several prompts, two versions of
one prompt, three models, errors, TTFT, tokens, cost, quality, and a latency step on one
prompt halfway through) through the real producer into Kafka; a real ``promptprof worker``
subprocess (the processor integration tests' :class:`Pipeline`) aggregates them into windows of
1 s and 5 s, rolls the 5 s windows up into 10 s ones, and its sink writes them to the session's
influxd. The worker is stopped once every call is in InfluxDB; the data stays for the rest of
the session. The calls behind the windows are read back from the calls topic
(:attr:`FilledDatabase.calls`), so that a test can compute any window's exact percentiles.

Both ``tests/dashboards`` and ``tests/report`` use it through :func:`filled_database`, which
runs the pipeline only the first time.

Alerts: the anomaly detector writes ``llm_alert`` points. When the worker wrote none (no rule
fired on this short run, or the detector is not in the worker yet), a few alert points with the
documented tags and fields are written for real series, so that the alert queries have rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from processor_integration.conftest import PARTITIONS, Pipeline, wait_until

from promptprof import KafkaSettings
from promptprof_processor.ingest.records import RecordReader
from promptprof_processor.ingest.validation import CallColumns
from promptprof_processor.report.influxql import ALERT_MEASUREMENT
from promptprof_processor.settings import (
    ProcessorTopicSettings,
    RetentionSettings,
    WindowSettings,
)
from promptprof_processor.sink.lineprotocol import (
    ERRORS_MEASUREMENT,
    WINDOW_MEASUREMENT,
    encode_line,
)
from promptprof_processor.sink.retention import ensure_policies
from promptprof_tools.demo.traffic import DEFAULT_SCENARIOS, Injection, Scenario, TrafficGenerator
from promptprof_tools.simulate import Completion, ModelProfile, SimulatedProvider
from promptprof_tools.stack import InfluxDB, TansuBroker, create_topics, run_sync

SERVICE = "support-bot"
WIDTHS_S = (1, 5)
ROLLUP_WIDTHS_S = (10,)
ALL_WIDTHS_S = (*WIDTHS_S, *ROLLUP_WIDTHS_S)
RATE_PER_S = 300.0
DURATION_S = 12.0
SLOW_PROMPT = "sql-gen"
# Calls take real time (half the simulated time) and carry their start time: windows stay open
# longer than the longest call (latencies are capped), so that no call is late.
TIME_SCALE = 0.5
MAX_LATENCY_MS = 10_000.0
ALLOWED_LATENESS_S = MAX_LATENCY_MS * TIME_SCALE / 1000 + 2
ERROR_RATE = 0.06
SCENARIOS: tuple[Scenario, ...] = tuple(
    replace(s, model=replace(s.model, error_rate=max(s.model.error_rate, ERROR_RATE)))
    for s in DEFAULT_SCENARIOS
)


class CappedProvider(SimulatedProvider):
    """The simulated provider with latencies capped at :data:`MAX_LATENCY_MS`."""

    def draw(self, profile: ModelProfile) -> Completion:
        """A completion whose latency (and TTFT) is at most the cap."""
        completion = super().draw(profile)
        latency = min(completion.latency_ms, MAX_LATENCY_MS)
        return replace(completion, latency_ms=latency, ttft_ms=min(completion.ttft_ms, latency))


class Call(NamedTuple):
    """What a call or quality event told the worker, for exact percentiles (a quality event
    has no latency)."""

    start_ns: int
    prompt_id: str
    prompt_version: str
    model: str
    latency_ms: float | None
    ttft_ms: float | None
    quality: float | None


class RollupPipeline(Pipeline):
    """The test pipeline whose workers also roll windows up (:data:`ROLLUP_WIDTHS_S`)."""

    def worker_env(self, data_dir: Path) -> dict[str, str]:
        """The pipeline's worker environment plus the rollup widths."""
        return {**super().worker_env(data_dir),
                "PROMPTPROF_WINDOWS__ROLLUP_WIDTHS_S": str(list(ROLLUP_WIDTHS_S))}


@dataclass(frozen=True)
class FilledDatabase:
    """Where the data is and what was sent."""

    influx: InfluxDB
    database: str
    calls_sent: int
    series: frozenset[tuple[str, str, str]]  # (prompt_id, version, model)
    seeded_alerts: bool
    calls: tuple[Call, ...]

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query on the filled database."""
        return self.influx.rows(query, self.database)


_filled: FilledDatabase | None = None


def filled_database(broker: TansuBroker, influx: InfluxDB, tmp: Path) -> FilledDatabase:
    """The session's filled database (made on the first call)."""
    global _filled
    if _filled is None:
        _filled = _fill(broker, influx, tmp)
    return _filled


def _pipeline(broker: TansuBroker, influx: InfluxDB, tmp: Path) -> Pipeline:
    tag = uuid.uuid4().hex[:8]
    topics = ProcessorTopicSettings(calls=f"dash-calls-{tag}", dead_letter=f"dash-dlq-{tag}",
                           windows=f"dash-windows-{tag}", alerts=f"dash-alerts-{tag}",
                           partitions=PARTITIONS)
    names = [topics.calls, topics.dead_letter, topics.windows, topics.alerts]
    run_sync(create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), names, PARTITIONS))
    database = f"dashboards_{tag}"
    influx.create_database(database)
    return RollupPipeline(broker=broker, influx=influx, database=database, topics=topics,
                          app_id=f"dash-app-{tag}", tmp=tmp, widths_s=list(WIDTHS_S),
                          allowed_lateness_s=ALLOWED_LATENESS_S)


def _fill(broker: TansuBroker, influx: InfluxDB, tmp: Path) -> FilledDatabase:
    pipeline = _pipeline(broker, influx, tmp)
    try:
        pipeline.start_worker()
        profiler = pipeline.profiler(service_name=SERVICE)
        generator = TrafficGenerator(
            profiler, rate=RATE_PER_S, seed=20261125, scenarios=SCENARIOS,
            injection=Injection(SLOW_PROMPT, after_s=DURATION_S / 2, latency_factor=2.5),
        )
        generator.provider = CappedProvider(20261126, TIME_SCALE)
        asyncio.run(generator.run(DURATION_S))
        run_sync(_send_malformed(pipeline))
        assert profiler.flush(30), f"producer did not flush: {profiler.stats()}"
        sent = sum(generator.stats.calls.values())
        for width in ALL_WIDTHS_S:
            _wait_for_calls(pipeline, width, sent)
        _wait_for_health(pipeline)
        calls = _calls(pipeline)
    finally:
        pipeline.close()
    assert sum(c.latency_ms is not None for c in calls) == sent
    seeded = _ensure_alerts(pipeline)
    return FilledDatabase(influx, pipeline.database, sent,
                          frozenset(generator.stats.calls), seeded, calls)


def _calls(pipeline: Pipeline) -> tuple[Call, ...]:
    """Every event of the calls topic, as the worker's reader decodes it."""
    reader = RecordReader(WindowSettings())
    found: list[Call] = []
    for value, _ in pipeline.read_topic(pipeline.topics.calls, expected=10**9, timeout_s=5):
        events = reader.read(value, time.time_ns()).events
        columns = events if isinstance(events, CallColumns) else None
        rows = ([dict(zip(columns.fields, values, strict=True))
                 for values in zip(*map(columns.column, columns.fields), strict=True)]
                if columns is not None else [dict(e) for e in events])
        found.extend(_call(row) for row in rows)
    return tuple(found)


def _call(row: dict[str, Any]) -> Call:
    scoring = "kind" in row
    return Call(row["start_time_unix_nano"], row["prompt_id"], row["prompt_version"],
                row["request_model"], None if scoring else row["latency_ms"],
                None if scoring else row.get("ttft_ms"), row.get("quality_score"))


async def _send_malformed(pipeline: Pipeline) -> None:
    """A few records the worker dead-letters (the pipeline-health dashboard shows them)."""
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.broker.bootstrap)
    await producer.start()
    try:
        for value in (b"not json", b'{"schema_version": 1}'):
            await producer.send_and_wait(pipeline.topics.calls, value, key=b"malformed")
    finally:
        await producer.stop()


def _wait_for_health(pipeline: Pipeline) -> None:
    """Wait for the worker's health samples with both dead letters, and a producer report."""
    def sampled() -> bool:
        dead = pipeline.rows('SELECT last("count") FROM "promptprof_dead_letters" '
                             "GROUP BY reason")
        return len(dead) == 2 and bool(pipeline.rows('SELECT count(*) FROM "promptprof_producer"'))

    wait_until(sampled, 60, "the pipeline-health samples", pipeline.logs)


def _wait_for_calls(pipeline: Pipeline, width_s: int, sent: int) -> None:
    def total() -> bool:
        rows = pipeline.rows(f"SELECT sum(calls) FROM llm_window WHERE width = '{width_s}s'")
        return bool(rows) and rows[0]["sum"] == sent

    wait_until(total, 60, f"{sent} calls in {width_s}s windows", pipeline.logs)


def _ensure_alerts(pipeline: Pipeline) -> bool:
    """Write alert points for real series unless the worker wrote some; tell whether it did."""
    if pipeline.rows(f'SELECT count("message") FROM "{ALERT_MEASUREMENT}"'):
        return False
    series = pipeline.rows(
        "SELECT last(calls) FROM llm_window WHERE width = '5s' "
        "GROUP BY service, prompt_id, prompt_version, model"
    )
    now_ns = time.time_ns()
    lines = []
    for i, row in enumerate(series):
        severity = ("warning", "critical", "info")[i % 3]
        tags = {key: str(row[key]) for key in ("service", "prompt_id", "prompt_version", "model")}
        tags |= {"rule": "anomaly.latency_p95_ms", "severity": severity, "state": "firing",
                 "width": "5s"}
        fields: dict[str, float | str | None] = {
            "observed": 2100.0 + i, "baseline": 900.0, "threshold": 1500.0,
            "message": f"p95 latency of {tags['prompt_id']} {tags['prompt_version']} is 2.3x "
                       "its baseline",
        }
        lines.append(encode_line(ALERT_MEASUREMENT, tags, fields, now_ns - (4 + 2 * i) * 10**9))
    pipeline.influx.write(lines, pipeline.database)
    return True


def with_retention(filled: FilledDatabase) -> tuple[FilledDatabase, dict[int, str]]:
    """A copy of the filled database laid out as a worker with retention per width writes it:
    each width's windows in its retention policy (created as the sink creates them), alerts and
    the pipeline-health samples in the default policy. Returns the copy and the policies."""
    database = f"{filled.database}_rp"
    influx = filled.influx
    influx.create_database(database)
    retention = RetentionSettings(enabled=True)
    ensure_policies(lambda q: influx.rows(q, database), database, retention,
                    list(ALL_WIDTHS_S))
    policies = retention.policies(ALL_WIDTHS_S)
    source = f'"{filled.database}"."autogen"'
    for width, policy in policies.items():
        for measurement in (WINDOW_MEASUREMENT, ERRORS_MEASUREMENT):
            influx.query(f'SELECT * INTO "{database}"."{policy}"."{measurement}" '
                         f"FROM {source}.\"{measurement}\" WHERE \"width\" = '{width}s' "
                         "GROUP BY *", database)
    # alerts and the pipeline's own samples stay in the default policy
    influx.query(f'SELECT * INTO "{database}"."autogen".:MEASUREMENT '
                 f"FROM {source}./^({ALERT_MEASUREMENT}|promptprof_.*)$/ GROUP BY *", database)
    return replace(filled, database=database), policies
