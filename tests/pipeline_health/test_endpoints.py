"""/metrics, /healthz and /readyz of a real worker: alive, ready once its partitions are
restored, lag per partition from the fetch's high watermark, and the same figures in InfluxDB."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from processor_integration.conftest import PARTITIONS, wait_until

from pipeline_health.conftest import Health

pytestmark = pytest.mark.integration


def test_a_worker_answers_its_probes_and_serves_its_figures(
    health_factory: Callable[..., Health],
) -> None:
    health = health_factory(widths_s=[1])
    pipeline = health.pipeline
    worker = health.start_worker()
    wait_until(lambda: health.status("/healthz") == 200, 60, "/healthz", pipeline.logs)
    wait_until(lambda: health.status("/readyz") == 200, 60, "/readyz", pipeline.logs)
    assert health.get("/healthz").text == "alive\n"
    traffic = pipeline.traffic()
    traffic.run(2.0, 200, lambda i: (f"p{i % 8}", 50.0, None))
    traffic.flush()
    sent = len(traffic.sent)

    def all_counted() -> bool:
        return health.metric("promptprof_partition_events_total") >= sent

    wait_until(all_counted, 60, "every event counted in /metrics", pipeline.logs)
    metrics = health.metrics()
    partitions = {dict(labels)["partition"] for (name, labels) in metrics
                  if name == "promptprof_partition_lag_records"}
    assert partitions == {str(p) for p in range(PARTITIONS)}
    assert health.metric("promptprof_partition_lag_records") == 0
    assert health.metric("promptprof_worker_ready") == 1
    assert health.metric("promptprof_worker_partitions") == PARTITIONS

    def points() -> list[dict[str, object]]:
        return health.rows(
            "SELECT last(events) AS events FROM promptprof_partition GROUP BY partition")

    rows = wait_until(lambda: sum(r["events"] for r in points()) >= sent and points(), 30,
                      "the partition points in InfluxDB", pipeline.logs)
    assert len(rows) == PARTITIONS
    worker.stop()
