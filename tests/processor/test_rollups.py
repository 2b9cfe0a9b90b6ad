"""Rollup widths: coarse windows merged exactly from the closed windows of a finer width."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from processor_integration.conftest import exact_quantile

from promptprof_processor.alerts.detector import AlertEngine
from promptprof_processor.alerts.events import Alert
from promptprof_processor.runtime.partition import PartitionRun
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.windows.aggregator import WindowAggregator
from promptprof_processor.windows.figures import WindowAggregate, rollup

from .factories import T0, call, within_sketch_error

FAR_FUTURE = T0 + 10**6 * NS_PER_S
QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


def of_width(windows: list[WindowAggregate], width_s: int) -> list[WindowAggregate]:
    return [w for w in windows if w.width_s == width_s]


# (second within the hour, latency in ms, version)
calls_st = st.lists(
    st.tuples(st.integers(0, 3599), st.floats(1.0, 60_000.0), st.sampled_from(["v1", "v2"])),
    min_size=1, max_size=400,
)


@given(calls_st)
@settings(max_examples=40, deadline=None)
def test_an_hourly_window_is_the_merge_of_its_minutes_and_exact_within_the_sketch_error(
    events: list[tuple[int, float, str]],
) -> None:
    agg = WindowAggregator(WindowSettings(widths_s=[10, 60], rollup_widths_s=[3600],
                                          allowed_lateness_s=0))
    agg.add([call(at, latency_ms=ms, prompt_version=v) for at, ms, v in events])
    closed = agg.advance(FAR_FUTURE)
    for hour in of_width(closed, 3600):
        version = hour.series.prompt_version
        minutes = [w for w in of_width(closed, 60) if w.series == hour.series]
        merged = rollup(minutes, hour.window_start_ns, hour.window_end_ns)
        assert hour.latency_ms == merged.latency_ms
        assert (hour.events, hour.calls, hour.errors) == (merged.events, merged.calls,
                                                          merged.errors)
        latencies = [ms for _, ms, v in events if v == version]
        assert hour.events == len(latencies)
        assert hour.latency_ms is not None
        for name, q in QUANTILES.items():
            exact = exact_quantile(latencies, q)
            assert within_sketch_error(getattr(hour.latency_ms, name), exact), (name, exact)
        assert hour.latency_ms.max == max(latencies)


def test_an_open_hour_costs_one_accumulator_per_series_in_the_checkpoint() -> None:
    agg = WindowAggregator(WindowSettings(widths_s=[10], rollup_widths_s=[3600],
                                          allowed_lateness_s=0))
    for second in range(0, 1800, 5):
        agg.add([call(second, prompt_version=v) for v in ("v1", "v2", "v3")])
        agg.advance()
    state = agg.snapshot()
    assert len(state["rollups"]) == 3
    assert len(state["windows"]) == 3  # the open 10 s window only


def test_a_restored_open_hour_closes_with_every_call() -> None:
    settings_ = WindowSettings(widths_s=[10], rollup_widths_s=[3600], allowed_lateness_s=0)
    agg = WindowAggregator(settings_)
    agg.add([call(s) for s in range(0, 600, 3)])
    agg.advance()
    saved = [agg.snapshot()]
    agg.add([call(s) for s in range(600, 1200, 3)])
    agg.advance()
    saved.append(agg.changes())
    again = WindowAggregator.from_changes(saved, settings_)
    hours = of_width(again.advance(FAR_FUTURE), 3600)
    assert [h.events for h in hours] == [400]


def test_a_restore_leaves_out_rollups_no_longer_configured() -> None:
    agg = WindowAggregator(WindowSettings(widths_s=[10], rollup_widths_s=[3600]))
    agg.add([call(s) for s in range(0, 120, 3)])
    agg.advance(T0 + 100 * NS_PER_S)
    again = WindowAggregator.from_changes([agg.snapshot()],
                                          WindowSettings(widths_s=[10], rollup_widths_s=[]))
    assert again.snapshot()["rollups"] == []
    assert of_width(again.advance(FAR_FUTURE), 3600) == []


@pytest.mark.parametrize(("change", "problem"), [
    ({"widths_s": [7]}, "no multiple"),
    ({"widths_s": [10], "rollup_widths_s": [10]}, "not one of widths_s"),
    ({"widths_s": [10], "rollup_widths_s": [172_800]}, "within"),
])
def test_rollup_widths_are_checked(change: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        WindowSettings.model_validate(change)


def test_a_rollup_is_merged_from_the_largest_width_dividing_it() -> None:
    assert WindowSettings(widths_s=[10, 60, 45]).rollup_source(3600) == 60
    assert WindowSettings(widths_s=[10, 60]).all_widths_s == [10, 60, 3600]


def test_the_alert_rules_do_not_judge_rollups() -> None:
    settings_ = WindowSettings(widths_s=[10], rollup_widths_s=[60], allowed_lateness_s=0)
    judged: list[int] = []

    class Recording(AlertEngine):
        def observe(self, windows: Iterable[WindowAggregate], partition: int = 0) -> list[Alert]:
            windows = list(windows)
            judged.extend(w.width_s for w in windows)
            return super().observe(windows, partition)

    run = PartitionRun(0, settings_, next_offset=0, alerts=Recording())
    run.windows.add([call(s) for s in range(0, 120, 5)])
    outputs = run._closed(run.windows.advance(FAR_FUTURE))
    assert {o.window.width_s for o in outputs if o.window is not None} == {10, 60}
    assert set(judged) == {10}
