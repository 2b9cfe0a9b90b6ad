"""Error-budget burn-rate alerts and spend alerts, judged per prompt from closed windows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.alerts import Alert, AlertEngine, parse_rules
from promptprof_processor.alerts.budgets import calls_over, period_bounds
from promptprof_processor.alerts.delivery import AlertDispatcher
from promptprof_processor.alerts.synthetic import (
    DEFAULT_SERIES,
    Change,
    Traffic,
    synthetic_windows,
)
from promptprof_processor.alerts.webhooks import slack_payload
from promptprof_processor.ingest.validation import CallColumns
from promptprof_processor.runtime.adapter import CallsWorker, GroupTimings
from promptprof_processor.settings import NS_PER_S, ProcessorSettings, WindowSettings
from promptprof_processor.windows.figures import CALL_FIELDS, Accumulator, WindowAggregate
from promptprof_processor.windows.sketches import add_values, encode_sketch, new_sketch
from tests.processor.factories import T0, call

HALF_BUDGET = Traffic(error_rate=0.0005)  # spends half of a 99.9 % budget, evenly
BURST_AT = 480


def engine(section: dict[str, Any]) -> AlertEngine:
    return AlertEngine(parse_rules({"defaults": {"anomaly": {"enabled": False}, **section}}))


SUCCESS = {"error_budget": {"success": {"objective": 0.999}}}


def test_a_10pct_error_burst_pages_the_fast_burn_within_ten_minutes_then_resolves() -> None:
    """10 s windows of ~210 calls a minute; the burst lasts 30 minutes from 8 h on."""
    burst = Change(BURST_AT * 6, (BURST_AT + 30) * 6, error_rate=0.10)
    traffic = Traffic(calls=35, error_rate=0.0005)
    for seed in range(4):
        windows = synthetic_windows(
            (BURST_AT + 120) * 6, seed=seed, width_s=10, traffic=traffic, changes=[burst]
        )
        start_ns = windows[BURST_AT * 6].window_start_ns
        alerts = engine(SUCCESS).observe(windows)
        fast = [a for a in alerts if a.rule == "burn.success.3600s"]
        assert [a.state for a in fast] == ["firing", "resolved"], seed
        delay_s = (fast[0].window.end_ns - start_ns) / NS_PER_S
        assert 480 <= delay_s <= 600, delay_s
        firing = fast[0]
        assert (firing.kind, firing.severity, firing.threshold) == ("burn_rate", "critical", 14.4)
        assert firing.observed >= 14.4
        assert (firing.series.prompt_version, firing.series.model) == ("*", "*")
        assert "burns" in firing.message and "30-day budget lasts" in firing.message
        slow = [a for a in alerts if a.rule == "burn.success.21600s"]
        assert slow and slow[0].severity == "warning"
        assert slow[0].window.end_ns > firing.window.end_ns


def test_traffic_that_spends_half_the_budget_evenly_never_pages() -> None:
    for seed in range(3):
        windows = synthetic_windows(1440, seed=50 + seed, traffic=HALF_BUDGET)
        assert engine(SUCCESS).observe(windows) == []


def test_a_latency_objective_counts_the_calls_over_its_threshold() -> None:
    """4x latency puts about a quarter of the calls over 4 s: a 24x burn of a 99 % budget."""
    section = {"error_budget": {"latency": {"objective": 0.99, "threshold_ms": 4000}}}
    windows = synthetic_windows(200, seed=60, changes=[Change(100, latency_factor=4.0)])
    alerts = engine(section).observe(windows)
    firing = {a.rule for a in alerts if a.state == "firing"}
    assert firing == {"burn.latency.3600s", "burn.latency.21600s"}
    assert alerts[0].window.end_ns > windows[100].window_start_ns
    assert "latency under 4,000 ms" in alerts[0].message


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(1.0, 100_000.0), min_size=1, max_size=300),
    st.floats(2.0, 50_000.0),
)
def test_calls_over_a_threshold_from_the_sketch_are_exact_to_its_accuracy(
    values: list[float], threshold: float
) -> None:
    sketch = new_sketch()
    add_values(sketch, values, None)
    window = synthetic_windows(1, seed=0)[0].model_copy(
        update={"sketches": {"latency_ms": encode_sketch(sketch)}}
    )
    counted = calls_over(window, threshold)
    assert sum(v > threshold * 1.021 for v in values) <= counted
    assert counted <= sum(v > threshold / 1.021 for v in values)


def latency_window(latencies: list[float], thresholds: list[float], at: int = 0) -> WindowAggregate:
    acc = Accumulator()
    records = [call(at * 60, latency_ms=v, sample_rate=0.5) for v in latencies]
    acc.add_calls(CallColumns.of_records(records, CALL_FIELDS), thresholds)
    start = T0 + at * 60 * NS_PER_S
    return acc.finish(DEFAULT_SERIES, start, start + 60 * NS_PER_S, late_events=0)


def test_calls_over_a_configured_threshold_are_counted_exactly() -> None:
    """Calls 0.25 % slower than the threshold share its sketch bin: the sketch cannot tell them
    from faster ones, the count made where the threshold is configured can."""
    latencies = [4010.0] * 30 + [3990.0] * 70
    exact = latency_window(latencies, [4000.0])
    assert calls_over(exact, 4000.0) == 60.0  # 30 events of weight 2
    from_sketch = latency_window(latencies, [])
    assert calls_over(from_sketch, 4000.0) != 60.0


def test_the_latency_budget_burns_on_the_exact_counts() -> None:
    section = {"error_budget": {"latency": {"objective": 0.99, "threshold_ms": 4000}}}
    rules = parse_rules({"defaults": {"anomaly": {"enabled": False}, **section}})
    assert rules.latency_thresholds_ms() == [4000.0]
    windows = [latency_window([4010.0] * 20 + [500.0] * 80, rules.latency_thresholds_ms(), at)
               for at in range(30)]
    alerts = AlertEngine(rules).observe(windows)
    assert {a.rule for a in alerts if a.state == "firing"} == {
        "burn.latency.3600s", "burn.latency.21600s"}
    assert alerts[0].observed == pytest.approx(20.0)  # 20 % slow against a 1 % budget


def test_the_rules_list_every_latency_threshold_once() -> None:
    rules = parse_rules({
        "defaults": {"error_budget": {"latency": {"objective": 0.99, "threshold_ms": 4000}}},
        "prompts": {
            "a": {"error_budget": {"latency": {"threshold_ms": 1500}}},
            "b": {"error_budget": None},
            "c": {"error_budget": {"latency": {"threshold_ms": 4000}}},
        },
    })
    assert rules.latency_thresholds_ms() == [1500.0, 4000.0]
    assert parse_rules({}).latency_thresholds_ms() == []


# -- spend ----------------------------------------------------------------------------------------


def test_spend_projected_over_the_budget_fires_with_the_projection() -> None:
    """~$0.042 per 60 s window is ~$60 a day: a $50 daily budget is projected to be crossed."""
    windows = synthetic_windows(120, seed=70)
    alerts = engine({"spend": {"budget_usd": 50.0}}).observe(windows)
    firing = [a for a in alerts if a.state == "firing"]
    assert firing and firing[0].rule == "spend.day" and firing[0].kind == "spend"
    first = firing[0]
    assert first.observed > 50.0 and first.threshold == 50.0
    assert first.baseline is not None and first.baseline < first.observed
    assert "spend projected to reach $" in first.message and "budget $50.00" in first.message


def test_spend_within_the_budget_stays_quiet() -> None:
    windows = synthetic_windows(600, seed=71)
    assert engine({"spend": {"budget_usd": 500.0}}).observe(windows) == []


def test_the_projection_is_spent_plus_rate_times_time_left() -> None:
    windows = synthetic_windows(180, seed=72)
    alerts = engine({"spend": {"budget_usd": 0.01, "rate_window_s": 3600}}).observe(windows)
    last: Alert = alerts[-1]
    window = next(w for w in windows if w.window_end_ns == last.window.end_ns)
    day_start, day_end = period_bounds("day", window.window_start_ns)
    counted = [w for w in windows if day_start <= w.window_start_ns <= window.window_start_ns]
    spent = sum(w.cost_usd_sum for w in counted)
    hour = [w for w in windows[: windows.index(window) + 1]
            if w.window_start_ns > window.window_start_ns - 3600 * NS_PER_S]
    covered = min(3600 * NS_PER_S, window.window_end_ns - windows[0].window_start_ns)
    rate = sum(w.cost_usd_sum for w in hour) / covered
    expected = spent + rate * (day_end - window.window_end_ns)
    assert last.baseline == pytest.approx(spent)
    assert last.observed == pytest.approx(expected, rel=0.02)


@given(st.integers(0, 4_000_000_000))
def test_month_bounds_hold_the_moment(seconds: int) -> None:
    at_ns = seconds * NS_PER_S
    start, end = period_bounds("month", at_ns)
    assert start <= at_ns < end
    first = datetime.fromtimestamp(start // NS_PER_S, tz=UTC)
    following = datetime.fromtimestamp(end // NS_PER_S, tz=UTC)
    assert (first.day, first.hour, following.day, following.hour) == (1, 0, 1, 0)
    assert 28 <= (end - start) // (86_400 * NS_PER_S) <= 31


def test_budget_alerts_read_well_in_slack() -> None:
    burst = synthetic_windows(150, seed=73, traffic=HALF_BUDGET, changes=[
        Change(120, error_rate=0.3)])
    burn = engine(SUCCESS).observe(burst)[0]
    spend = engine({"spend": {"budget_usd": 1.0}}).observe(synthetic_windows(5, seed=74))[0]
    figures = [
        {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in
         slack_payload(a)["blocks"][1]["fields"]}
        for a in (burn, spend)
    ]
    assert figures[0]["*Observed*"].endswith("x") and figures[0]["*Threshold*"] in ("14.4x", "6.0x")
    assert figures[1]["*Observed*"].startswith("$") and figures[1]["*Threshold*"] == "$1.00"


def test_the_worker_counts_the_latency_thresholds_of_its_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {error_budget: {latency: {objective: 0.99, threshold_ms: 4000}}}")
    settings = ProcessorSettings(
        windows=WindowSettings(latency_thresholds_ms=[250]), alerts={"rules_file": rules}
    )
    dispatcher = cast(AlertDispatcher, object())  # only whether there is one matters here
    worker = CallsWorker(settings, GroupTimings(), dispatcher)
    assert worker.settings.windows.latency_thresholds_ms == [250.0, 4000.0]
    assert CallsWorker(settings, GroupTimings(), None).settings.windows.latency_thresholds_ms == [
        250.0]
