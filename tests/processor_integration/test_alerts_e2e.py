"""A latency regression through the real worker: a signed webhook, a point in InfluxDB; a
sustained regression gives one firing per incident and, after recovery, one resolution."""

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
GROUPING = json.dumps({"group_wait_s": 0.5, "group_interval_s": 1.0})


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
        "PROMPTPROF_ALERTS__GROUPING": GROUPING,
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
        alert = receiver.alerts()[0]
        assert alert["state"] == "firing"
        assert alert["series"]["prompt_id"] == "checkout"
        assert alert["observed"] > alert["baseline"]
    points = wait_until(
        lambda: pipeline.rows("SELECT * FROM llm_alert WHERE prompt_id = 'checkout'"),
        timeout_s=30, what="the alert's point in InfluxDB",
    )
    assert any(p["state"] == "firing" for p in points)


def test_a_sustained_regression_fires_once_and_resolves_once_after_recovery(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    """Three times slower for 20 s (20 windows: the old engine resolved within about 10 while
    it lasted), then back to normal: each incident fires once, and resolves once, after."""
    rng = random.Random(11)
    pipeline = pipeline_factory(widths_s=[1])
    with WebhookReceiver(SECRET) as receiver:
        _start_alerting_worker(pipeline, receiver)
        traffic = pipeline.traffic()
        phases = ((1, 8), (3, 20))
        for factor, duration_s in phases:

            def call(i: int, factor: int = factor) -> tuple[str, float, None]:
                return "checkout", factor * rng.lognormvariate(4.6, 0.2), None

            traffic.run(duration_s=duration_s, rate_per_s=200, make_call=call)
        traffic.flush()
        wait_until(receiver.alerts, timeout_s=60, what="a firing", explain=pipeline.logs)
        during = [a for a in receiver.alerts() if a["series"]["prompt_id"] == "checkout"]
        assert {a["state"] for a in during} == {"firing"}, during

        def normal(i: int) -> tuple[str, float, None]:
            return "checkout", rng.lognormvariate(4.6, 0.2), None

        traffic.run(duration_s=8, rate_per_s=200, make_call=normal)
        traffic.flush()
        fired = {a["rule"] for a in during if not a["repeat"]}

        def resolved() -> list[dict[str, object]] | None:
            found = [a for a in receiver.alerts() if a["state"] == "resolved"]
            return found if {a["rule"] for a in found} >= fired else None

        wait_until(resolved, timeout_s=60, what="the resolutions", explain=pipeline.logs)
        events = [a for a in receiver.alerts() if a["series"]["prompt_id"] == "checkout"]
    by_rule: dict[str, list[str]] = {}
    for event in events:
        by_rule.setdefault(str(event["rule"]), []).append(str(event["state"]))
    assert "anomaly.latency_p95_ms" in by_rule
    assert all(states == ["firing", "resolved"] for states in by_rule.values()), by_rule
