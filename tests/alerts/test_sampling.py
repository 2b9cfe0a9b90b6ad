"""Sampling-correct statistics: gates and spreads count observed events, rates stay weighted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.alerts import AlertEngine, parse_rules
from promptprof_processor.alerts.metrics import METRICS
from promptprof_processor.alerts.synthetic import (
    DEFAULT_SERIES,
    Change,
    Traffic,
    synthetic_windows,
)
from promptprof_processor.ingest.validation import CallColumns, CallRecord
from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import CALL_FIELDS, Accumulator, WindowAggregate
from tests.processor.factories import T0, call


def test_sampled_stationary_traffic_raises_no_alert() -> None:
    for seed, calls in ((40, 4000.0), (41, 2000.0), (42, 400.0)):
        windows = synthetic_windows(600, seed=seed, traffic=Traffic(calls=calls, sample_rate=0.05))
        assert AlertEngine().observe(windows) == [], calls


def test_a_window_of_a_few_sampled_events_is_neither_judged_nor_learned() -> None:
    """120 calls at sample rate 0.05: about 6 events per window, each standing for 20 calls.
    Weighted, they would pass min_calls (20, and 40 for p95); observed, they do not."""
    traffic = Traffic(calls=120, sample_rate=0.05)
    windows = synthetic_windows(200, seed=43, traffic=traffic, changes=[
        Change(100, latency_factor=5.0, error_rate=0.5)
    ])
    assert all(w.events < 20 for w in windows)
    assert sum(w.calls for w in windows) / len(windows) > 100
    eng = AlertEngine()
    assert eng.observe(windows) == []
    assert all(not s.baselines for s in eng._partitions[0].series.values())


def test_a_change_under_sampling_is_still_detected_from_enough_events() -> None:
    traffic = Traffic(calls=4000, sample_rate=0.05)  # about 200 events per window
    windows = synthetic_windows(80, seed=44, traffic=traffic, changes=[
        Change(60, latency_factor=2.0)
    ])
    fired = [a for a in AlertEngine().observe(windows) if a.state == "firing"]
    assert any(a.metric == "latency_p95_ms" for a in fired)


def test_the_error_rate_spread_is_that_of_the_observed_events() -> None:
    """An error rate of 1 % measured on 40 events has a binomial spread of 1.6 points, whatever
    the weight: sampled 2.5 % errors is within the noise, and does not fire."""
    rules = parse_rules({"defaults": {"min_calls": 30, "anomaly": {"metrics": {
        "error_rate": {"min_absolute_change": 0.0}}}}})
    traffic = Traffic(calls=800, sample_rate=0.05, error_rate=0.01)
    windows = synthetic_windows(300, seed=45, traffic=traffic, changes=[
        Change(100, error_rate=0.025)
    ])
    errors = [a for a in AlertEngine(rules).observe(windows) if a.metric == "error_rate"]
    assert errors == []


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([1.0, 0.5, 0.1, 0.05, 0.01]), st.integers(0, 10_000))
def test_counts_are_observed_events_and_totals_stay_weighted(rate: float, seed: int) -> None:
    traffic = Traffic(calls=400, sample_rate=rate)
    for window in synthetic_windows(3, seed=seed, traffic=traffic):
        assert window.calls == window.events / rate
        for name in ("latency_p95_ms", "error_rate", "ttft_p95_ms", "tokens_per_call",
                     "cost_per_call_usd", "quality_mean"):
            assert abs(METRICS[name].count(window) - window.events) < 1e-6 * window.events
        assert window.errors == pytest.approx(window.error_rate * window.calls)


def window_of(records: list[CallRecord]) -> WindowAggregate:
    acc = Accumulator()
    acc.add_calls(CallColumns.of_records(records, CALL_FIELDS))
    return acc.finish(DEFAULT_SERIES, T0, T0 + 60 * NS_PER_S, late_events=0)


def test_each_figure_is_gated_on_the_events_that_carried_it() -> None:
    """40 events sampled at 0.1 (400 calls), 3 of them with a TTFT: latency rests on 40
    measurements, TTFT on 3 (not the 30 calls they stand for)."""
    records = [call(ttft_ms=20.0 if i < 3 else None, input_tokens=100 if i < 10 else None,
                    cost_usd=0.01 if i < 20 else None, sample_rate=0.1) for i in range(40)]
    window = window_of(records)
    counts = {name: METRICS[name].count(window) for name in METRICS}
    assert counts["latency_p95_ms"] == counts["error_rate"] == 40
    assert (counts["ttft_p95_ms"], counts["tokens_per_call"], counts["cost_per_call_usd"]) == (
        3, 10, 20)
    assert counts["quality_mean"] == 0


def test_every_metric_reads_a_count_the_window_fills() -> None:
    """The keys the metrics read are the keys the accumulator writes."""
    records = [call(ttft_ms=20.0, input_tokens=100, output_tokens=10, cost_usd=0.01,
                    quality_score=0.9, sample_rate=0.5) for _ in range(7)]
    window = window_of(records)
    assert {name: METRICS[name].count(window) for name in METRICS} == dict.fromkeys(METRICS, 7)
