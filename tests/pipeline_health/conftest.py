"""Pipeline-health fixtures: a :class:`Pipeline` with a producer-stats topic of its own and
workers whose probe endpoint listens on a free port, checking every second."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from processor_integration.conftest import (
    PARTITIONS,
    Pipeline,
    WorkerProcess,
    pipeline_factory,
    rng,
)
from prometheus_client.parser import text_string_to_metric_families

from promptprof import KafkaSettings
from promptprof_processor.alerts import WebhookReceiver
from promptprof_tools.stack import create_topics, run_sync
from promptprof_tools.stack.ports import free_port

__all__ = ["Health", "health_factory", "pipeline_factory", "receiver", "rng"]

GROUPING = json.dumps({"group_wait_s": 0.2, "group_interval_s": 0.5})


@dataclass
class Health:
    """A pipeline whose workers serve /metrics, /healthz and /readyz and judge the pipeline."""

    pipeline: Pipeline
    port: int

    def start_worker(self, receiver: WebhookReceiver | None = None,
                     **alerts: float) -> WorkerProcess:
        """Start a worker checking every second, with ``alerts`` as pipeline-alert settings
        and ``receiver`` as its only alert receiver."""
        name = f"worker-{len(self.pipeline.workers)}"
        data_dir = self.pipeline.tmp / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self.pipeline.worker_env(data_dir)
        env.update({
            "PROMPTPROF_TOPICS__PRODUCER_STATS": self.pipeline.topics.producer_stats,
            "PROMPTPROF_HEALTH__PORT": str(self.port),
            "PROMPTPROF_HEALTH__INTERVAL_S": "1",
            "PROMPTPROF_HEALTH__WORKER_NAME": name,
            **{f"PROMPTPROF_HEALTH__ALERTS__{k.upper()}": str(v) for k, v in alerts.items()},
        })
        if receiver is not None:
            env.update({
                "PROMPTPROF_ALERTS__RECEIVERS": json.dumps([{"name": "r", "url": receiver.url}]),
                "PROMPTPROF_ALERTS__GROUPING": GROUPING,
            })
        worker = WorkerProcess(name, env, self.pipeline.tmp / f"{name}.log")
        self.pipeline.workers.append(worker)
        return worker.start()

    def get(self, path: str) -> httpx.Response:
        """GET a path of the worker's endpoint."""
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def status(self, path: str) -> int:
        """The status a path answers with, 0 while nothing listens."""
        try:
            return self.get(path).status_code
        except httpx.TransportError:
            return 0

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, by name and sorted labels."""
        text = self.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for (n, ls), v in self.metrics().items()
                   if n == name and set(labels.items()) <= set(ls))

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query on the pipeline's database."""
        return self.pipeline.rows(query)


@pytest.fixture
def health_factory(
    pipeline_factory: Callable[..., Pipeline], unique_name: Callable[[str], str],
) -> Callable[..., Health]:
    """``health_factory(**pipeline_options)`` -> a :class:`Health` pipeline."""

    def make(**options: Any) -> Health:
        pipeline = pipeline_factory(**options)
        pipeline.topics = pipeline.topics.model_copy(
            update={"producer_stats": unique_name("pstats")})
        kafka = KafkaSettings(bootstrap_servers=pipeline.broker.bootstrap)
        run_sync(create_topics(kafka, [pipeline.topics.producer_stats], PARTITIONS))
        return Health(pipeline, free_port())

    return make


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real webhook receiver on loopback (no signature)."""
    with WebhookReceiver(None) as running:
        yield running
