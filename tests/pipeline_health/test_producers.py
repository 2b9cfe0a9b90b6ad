"""Producers' stats end to end: a producer killed mid-stream shows as stale and pages through a
real receiver; one closed cleanly is not stale; one that drops events pages too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from processor_integration.conftest import SERVICE, wait_until

from pipeline_health.conftest import Health
from promptprof._profiler import make_spec
from promptprof_processor.alerts import WebhookReceiver
from promptprof_processor.health.settings import PipelineAlertSettings
from promptprof_processor.health.status import ProducerStatus, read_producers
from promptprof_processor.report.influxql import InfluxQLClient
from promptprof_processor.settings import InfluxSettings

pytestmark = pytest.mark.integration

STALE_S = 4.0
SPEC = make_spec("health", "v1", model="m-test")
SCRIPT = Path(__file__).with_name("producer_process.py")


def _producers(health: Health) -> dict[str, ProducerStatus]:
    pipeline = health.pipeline
    settings = InfluxSettings(url=pipeline.influx.url, database=pipeline.database)
    with InfluxQLClient(settings) as client:
        found = read_producers(client, PipelineAlertSettings(producer_stale_s=STALE_S))
    return {p.service: p for p in found}


def _spawn(health: Health) -> subprocess.Popen[bytes]:
    pipeline = health.pipeline
    settings: dict[str, Any] = {
        "kafka": {"bootstrap_servers": pipeline.broker.bootstrap},
        "topics": pipeline.topics.model_dump(),
        "producer": {"service_name": "killed", "stats_interval_s": 0.5, "linger_ms": 20,
                     "metrics_log_interval_s": 0},
    }
    process = subprocess.Popen([sys.executable, str(SCRIPT), orjson.dumps(settings).decode()],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"sending\n"
    return process


def _firing(receiver: WebhookReceiver, rule: str, service: str) -> list[Any]:
    return [a for a in receiver.alerts() if a["rule"] == rule
            and a["series"]["service"] == service and a["state"] == "firing"]


def test_killed_producer_goes_stale_closed_one_does_not_dropping_one_pages(
    health_factory: Callable[..., Health], receiver: WebhookReceiver,
) -> None:
    health = health_factory(widths_s=[1])
    pipeline = health.pipeline
    health.start_worker(receiver, producer_stale_s=STALE_S, drops_window_s=60)
    killed = _spawn(health)
    try:
        closed = pipeline.profiler(service_name="closed", stats_interval_s=0.5)
        # a buffer of 100 calls that is never taken (a cycle is due only after a minute)
        dropping = pipeline.profiler(service_name="dropping", stats_interval_s=0.5,
                                     buffer_size=100, linger_ms=60_000, batch_max_events=10_000)
        traffic = pipeline.traffic(service_name=SERVICE, stats_interval_s=0.5)
        for profiler in (closed, dropping, traffic.profiler):
            for _ in range(300):
                call = profiler.start_call(SPEC)
                assert call is not None
                call.end_ns = call.start_ns + 1_000_000
                profiler.enqueue(call)
        wait_until(lambda: {"killed", "closed", "dropping"} <= set(_producers(health)), 60,
                   "every producer's report in InfluxDB", pipeline.logs)
        assert not _producers(health)["killed"].stale
        killed.kill()
        killed.wait(10)
        assert closed.close(timeout=5)
        stale = wait_until(lambda: _producers(health)["killed"].stale, 60,
                           "the killed producer stale", pipeline.logs)
        assert stale
        found = _producers(health)
        assert found["closed"].final and not found["closed"].stale
        assert found["dropping"].last["dropped_buffer_full"] > 0
        wait_until(lambda: _firing(receiver, "pipeline.producer_stale", "killed"), 30,
                   "a producer_stale alert", pipeline.logs)
        wait_until(lambda: _firing(receiver, "pipeline.producer_drops", "dropping"), 30,
                   "a producer_drops alert", pipeline.logs)
        assert not _firing(receiver, "pipeline.producer_stale", "closed")
        assert not _firing(receiver, "pipeline.producer_drops", "closed")
        alert = _firing(receiver, "pipeline.producer_stale", "killed")[0]
        assert alert["kind"] == "pipeline"
        assert alert["series"]["labels"]["pid"] == str(killed.pid)
    finally:
        killed.kill()
