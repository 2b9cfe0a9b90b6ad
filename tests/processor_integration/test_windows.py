"""Calls in through the real producer -> a real worker -> windows in the real InfluxDB."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from processor_integration.conftest import NS, Pipeline, exact_quantile

pytestmark = pytest.mark.integration

PLAIN = ("alpha", "beta", "gamma")
LATENCY = "latency"
ERRORS = "flaky"
SERIES = (*PLAIN, LATENCY, ERRORS)
ERROR_TYPES = ("RateLimitError", "APITimeoutError")


def _call_maker(rng: random.Random) -> Callable[[int], tuple[str, float, str | None]]:
    """Round-robin over the series: a lognormal latency (median 300 ms) for ``latency``,
    errors of two types for ``flaky`` (every 3rd and every 5th of its calls)."""

    def make(i: int) -> tuple[str, float, str | None]:
        prompt_id = SERIES[i % len(SERIES)]
        latency = round(rng.lognormvariate(5.7, 0.6), 3) if prompt_id == LATENCY else 50.0
        error = None
        if prompt_id == ERRORS:
            n = i // len(SERIES)
            error = ERROR_TYPES[0] if n % 3 == 0 else ERROR_TYPES[1] if n % 5 == 0 else None
        return prompt_id, latency, error

    return make


def test_calls_become_windows_in_influxdb(
    pipeline_factory: Callable[..., Pipeline], rng: random.Random
) -> None:
    pipeline = pipeline_factory(widths_s=[2, 4])
    worker = pipeline.start_worker()
    traffic = pipeline.traffic()
    traffic.run(duration_s=4.5, rate_per_s=1500, make_call=_call_maker(rng))
    traffic.flush()
    sent = traffic.count_by_prompt()
    assert set(sent) == set(SERIES)

    for width in (2, 4):
        points = pipeline.wait_for_windows(traffic, width)
        # every window holds exactly what was sent in it, and nothing else arrived
        assert pipeline.calls_by_prompt(width) == {p: float(n) for p, n in sent.items()}
        expected = traffic.windows(width)
        assert set(points) == set(expected)
        for key, calls in expected.items():
            assert points[key]["events"] == len(calls), key

        # percentiles of a known latency distribution, window by window (DDSketch: 1%)
        checked = 0
        for (prompt_id, start), calls in expected.items():
            if prompt_id != LATENCY or len(calls) < 300:
                continue
            latencies = [c.latency_ms for c in calls]
            point = points[(prompt_id, start)]
            for q, column in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms")):
                exact = exact_quantile(latencies, q)
                assert point[column] == pytest.approx(exact, rel=0.02), (width, start, q)
            assert point["latency_max_ms"] == pytest.approx(max(latencies), rel=0.01)
            checked += 1
        assert checked >= 4 // width, f"too few full {width}s windows of {LATENCY} to check"

    # errors: the error fields of llm_window and the per-type points of llm_window_errors
    errors_sent = Counter(c.error_type for c in traffic.sent if c.error_type)
    by_type = pipeline.rows(
        "SELECT sum(errors) FROM llm_window_errors WHERE width='2s' GROUP BY prompt_id, error_type"
    )
    assert {(r["prompt_id"], r["error_type"]): r["sum"] for r in by_type} == {
        (ERRORS, t): float(n) for t, n in errors_sent.items()
    }
    totals = pipeline.rows(
        "SELECT sum(errors) AS errors, sum(calls) AS calls FROM llm_window "
        f"WHERE width='2s' AND prompt_id='{ERRORS}'"
    )
    assert totals[0]["errors"] == float(sum(errors_sent.values()))
    rates = pipeline.rows(
        f"SELECT error_rate, errors, calls FROM llm_window WHERE prompt_id='{ERRORS}'"
    )
    for row in rates:
        assert row["error_rate"] == pytest.approx(row["errors"] / row["calls"])

    # window starts are aligned to the width, and the tags carry the series identity
    tagged = pipeline.rows(
        "SELECT calls FROM llm_window GROUP BY service, prompt_version, model, width"
    )
    assert {(r["service"], r["prompt_version"], r["model"]) for r in tagged} == {
        ("itest", "v1", "m-test")
    }
    for width in (2, 4):
        assert all(start % (width * NS) == 0 for _, start in traffic.windows(width))

    assert worker.alive()
    assert worker.stop() < 10
    assert worker.popen is not None and worker.popen.returncode == 0, worker.log_tail()
