"""A latency regression through the real worker: a signed webhook, a point in InfluxDB."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from processor_integration.conftest import Pipeline, WorkerProcess, wait_until
from promptprof_processor.alerts import WebhookReceiver

pytestmark = pytest.mark.integration

RULES = """\
defaults:
  min_calls: 20
  hysteresis: {fire_after: 2, resolve_after: 3}
  anomaly: {warmup_windows: 4, baseline_windows: 20, threshold: 5, min_relative_change: 0.2}
"""
SECRET = "e2e-secret-4b1d"


def _start_alerting_worker(pipeline: Pipeline, receiver: WebhookReceiver) -> WorkerProcess:
    rules = pipeline.tmp / "rules.yaml"
    rules.write_text(RULES)
    data_dir = pipeline.tmp / "alerting" / "data"
    data_dir.mkdir(parents=True)
    env = pipeline.worker_env(data_dir)
    env.update({
        "PROMPTPROF_ALERTS__RULES_FILE": str(rules),
        "PROMPTPROF_E2E_SECRET": SECRET,
        "PROMPTPROF_ALERTS__RECEIVERS": json.dumps(
            [{"name": "e2e", "url": receiver.url, "secret_env": "PROMPTPROF_E2E_SECRET"}]
        ),
        "PROMPTPROF_ALERTS__ROUTES": json.dumps([{"receivers": ["e2e"]}]),
    })
    worker = WorkerProcess("alerting", env, Path(pipeline.tmp / "alerting.log"))
    pipeline.workers.append(worker)
    return worker.start()


def test_latency_jump_fires_a_signed_webhook_and_an_alert_point(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    rng = random.Random(7)
    pipeline = pipeline_factory(widths_s=[1])
    with WebhookReceiver(SECRET) as receiver:
        _start_alerting_worker(pipeline, receiver)
        traffic = pipeline.traffic()
        for factor, duration_s in ((1, 8), (3, 6)):  # then three times slower

            def call(i: int, factor: int = factor) -> tuple[str, float, None]:
                return "checkout", factor * rng.lognormvariate(4.6, 0.2), None

            traffic.run(duration_s=duration_s, rate_per_s=200, make_call=call)
        traffic.flush()
        received = receiver.wait_for(1, timeout_s=60)
        assert received, "no alert reached the webhook\n" + pipeline.logs()
        assert not receiver.rejected, "a webhook failed its signature check"
        alert = received[0].json()
        assert alert["state"] == "firing"
        assert alert["series"]["prompt_id"] == "checkout"
        assert alert["observed"] > alert["baseline"]
    points = wait_until(
        lambda: pipeline.rows("SELECT * FROM llm_alert WHERE prompt_id = 'checkout'"),
        timeout_s=30, what="the alert's point in InfluxDB",
    )
    assert any(p["state"] == "firing" for p in points)
