"""A stopped InfluxDB shows as a growing sink backlog that drains after its restart, and pages;
malformed records show in the dead letters by reason, and page above the configured rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from processor_integration.conftest import wait_until

from pipeline_health.conftest import Health
from promptprof_processor.alerts import WebhookReceiver
from promptprof_tools.stack import InfluxDB, run_sync

pytestmark = pytest.mark.integration

SERIES = ("north", "south", "east")
BEHIND_S = 3.0


def _alerts(receiver: WebhookReceiver, rule: str, state: str) -> list[Any]:
    return [a for a in receiver.alerts() if a["rule"] == rule and a["state"] == state]


def test_sink_backlog_grows_while_influxdb_is_down_then_drains(
    health_factory: Callable[..., Health], influxdb_factory: Callable[[], InfluxDB],
    receiver: WebhookReceiver,
) -> None:
    influx = influxdb_factory()
    health = health_factory(widths_s=[1], influx=influx)
    pipeline = health.pipeline
    health.start_worker(receiver, sink_behind_s=BEHIND_S)
    traffic = pipeline.traffic()
    thread, stop = traffic.run_in_thread(
        120.0, 200, lambda i: (SERIES[i % len(SERIES)], 40.0 + i % 50, None))
    try:
        wait_until(lambda: pipeline.calls_by_prompt(1), 60, "the first windows", pipeline.logs)
        influx.stop()
        down_ns = time.time_ns()
        first = wait_until(lambda: health.metric("promptprof_sink_backlog_windows"), 30,
                           "a sink backlog", pipeline.logs)
        grown = wait_until(
            lambda: (b := health.metric("promptprof_sink_backlog_windows")) > first and b, 30,
            "the backlog growing", pipeline.logs)
        wait_until(lambda: health.metric("promptprof_sink_oldest_unwritten_seconds") > BEHIND_S,
                   30, "the oldest unwritten window older than the limit", pipeline.logs)
        wait_until(lambda: _alerts(receiver, "pipeline.sink_behind", "firing"), 30,
                   "a sink_behind alert", pipeline.logs)
        assert health.metric("promptprof_influx_write_failures_total") > 0
        influx.start(timeout_s=60)
        up_ns = time.time_ns()
        wait_until(lambda: health.metric("promptprof_sink_backlog_windows") == 0, 60,
                   "the backlog drained", pipeline.logs)
        wait_until(lambda: _alerts(receiver, "pipeline.sink_behind", "resolved"), 30,
                   "the sink_behind alert resolved", pipeline.logs)
    finally:
        stop.set()
        thread.join()
    # the samples taken during the outage reach InfluxDB after it
    query = (f"SELECT max(sink_backlog) AS backlog FROM promptprof_worker "
             f"WHERE time >= {down_ns} AND time <= {up_ns}")
    rows = wait_until(lambda: health.rows(query), 30, "the outage's samples", pipeline.logs)
    assert rows[0]["backlog"] >= grown


async def _send_raw(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"bad", partition=0)
    finally:
        await producer.stop()


def test_malformed_records_show_in_dead_letters_by_reason_and_page(
    health_factory: Callable[..., Health], receiver: WebhookReceiver,
) -> None:
    health = health_factory(widths_s=[1])
    pipeline = health.pipeline
    health.start_worker(receiver, dead_letters_per_s=0.5)
    wait_until(lambda: health.status("/readyz") == 200, 60, "/readyz", pipeline.logs)
    bad: list[bytes | None] = [b"not json"] * 3 + [None] * 2 + [b'{"schema_version": 1}'] * 4
    run_sync(_send_raw(pipeline.broker.bootstrap, pipeline.topics.calls, bad))
    expected = {"not_json": 3, "empty_record": 2, "invalid_event": 4}

    def by_reason() -> dict[str, float]:
        return {r: health.metric("promptprof_dead_letters_total", stage="worker", reason=r)
                for r in expected}

    wait_until(lambda: by_reason() == expected, 30, f"dead letters {expected}", pipeline.logs)
    query = ('SELECT last("count") AS "count" FROM promptprof_dead_letters '
             "WHERE stage = 'worker' GROUP BY reason")
    rows = wait_until(lambda: len(health.rows(query)) == 3 and health.rows(query), 30,
                      "dead letters in InfluxDB", pipeline.logs)
    assert {r["reason"]: r["count"] for r in rows} == expected
    wait_until(lambda: _alerts(receiver, "pipeline.dead_letters", "firing"), 30,
               "a dead_letters alert", pipeline.logs)
    assert pipeline.read_topic(pipeline.topics.dead_letter, len(bad))
