"""Event-time windows: watermark, lateness, widths, cardinality and checkpoints."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.ingest.validation import CallRecord
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.windows.aggregator import StateError, WindowAggregator
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_processor.windows.series import OVERFLOW

from .factories import T0, call, ns, quality

FAR_FUTURE = T0 + 10**6 * NS_PER_S


def aggregator(**overrides: object) -> WindowAggregator:
    """An aggregator of the given settings, without rollup widths unless given."""
    return WindowAggregator(WindowSettings.model_validate({"rollup_widths_s": [], **overrides}))


def spans(windows: list[WindowAggregate]) -> list[tuple[int, float]]:
    return [(w.width_s, (w.window_start_ns - T0) / NS_PER_S) for w in windows]


def test_a_window_closes_when_the_watermark_passes_its_end_plus_lateness() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=30)
    agg.add([call(1), call(9.999)])
    agg.add([call(39.999)])
    assert agg.watermark_ns == ns(9.999)
    assert agg.advance() == []
    agg.add([call(40)])
    closed = agg.advance()
    assert spans(closed) == [(10, 0)]
    assert closed[0].events == 2
    assert (closed[0].window_end_ns - closed[0].window_start_ns) == 10 * NS_PER_S
    assert agg.closed_until_ns == ns(10)
    assert agg.advance() == []


def test_every_width_is_aggregated_and_closed_in_order() -> None:
    agg = aggregator(widths_s=[60, 10], allowed_lateness_s=0)
    agg.add([call(s) for s in (1, 11, 12, 59)])
    agg.add([call(60)])
    closed = agg.advance()
    assert spans(closed) == [(10, 0), (10, 10), (10, 50), (60, 0)]
    assert [w.events for w in closed] == [1, 2, 1, 4]
    assert closed[-1].latency_ms is not None


def test_widths_that_are_not_multiples_of_each_other() -> None:
    agg = aggregator(widths_s=[10, 15], allowed_lateness_s=0)
    agg.add([call(s) for s in (0, 5, 9, 10, 14, 16, 29)])
    closed = agg.advance(FAR_FUTURE)
    counts = {span: w.events for span, w in zip(spans(closed), closed, strict=True)}
    assert counts == {(10, 0): 3, (10, 10): 3, (10, 20): 1, (15, 0): 5, (15, 15): 2}


def test_late_events_are_counted_not_lost() -> None:
    agg = aggregator(widths_s=[10, 60], allowed_lateness_s=5)
    agg.add([call(1), call(20)])
    assert spans(agg.advance()) == [(10, 0)]  # watermark 15
    agg.add([call(2), call(3)])  # late for 10 s, on time for 60 s
    closed = agg.advance(FAR_FUTURE)
    by_span = {span: w for span, w in zip(spans(closed), closed, strict=True)}
    assert by_span[10, 10].late_events == 2  # the open 10 s window when they came
    assert by_span[10, 10].events == 0
    assert by_span[10, 20].events == 1
    assert by_span[60, 0].events == 4 and by_span[60, 0].late_events == 0
    assert (agg.stats.late_events, agg.stats.dropped_events) == (2, 0)


def test_events_late_for_every_width_are_dropped_and_counted() -> None:
    agg = aggregator(widths_s=[10, 60], allowed_lateness_s=0)
    agg.add([call(1)])
    agg.add([call(125)])
    agg.advance()  # watermark 125: [0, 60) and [60, 120) closed
    agg.add([call(30), call(31, status="error")])
    closed = agg.advance(FAR_FUTURE)
    assert (agg.stats.events, agg.stats.late_events, agg.stats.dropped_events) == (4, 2, 2)
    assert {(w.width_s, w.late_events) for w in closed if w.late_events} == {(10, 2), (60, 2)}
    assert sum(w.events for w in closed if w.width_s == 60) == 1


def test_the_caller_may_supply_the_watermark() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=30)
    agg.add([call(1)])
    assert agg.advance(ns(9)) == []
    assert spans(agg.advance(ns(10))) == [(10, 0)]
    assert agg.advance(ns(5)) == []  # a lower watermark reopens nothing
    agg.add([call(2)])
    assert agg.stats.dropped_events == 1


def test_quality_events_join_their_call_window_and_can_be_late() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=0, quality_lateness_s=0,
                     label_dimensions=["tenant"])
    agg.add([call(1, labels={"tenant": "a"}), quality(2, 0.5)])
    agg.add([call(11)])
    closed = agg.advance()
    assert [(w.series.labels, w.events, w.quality_scored) for w in closed] == [
        ({}, 0, 1.0),
        ({"tenant": "a"}, 1, 0.0),
    ]
    agg.add([quality(3, 0.9)])
    assert agg.stats.dropped_events == 1


def test_series_are_separated_within_one_batch() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=0, label_dimensions=["tenant", "region"])
    agg.add(
        [
            call(1, labels={"tenant": "a", "region": "eu"}),
            call(2, labels={"tenant": "a", "region": "eu"}),
            call(3, labels={"tenant": "b"}),
            call(4, prompt_version="v2"),
            call(5, service="other", labels={"region": "us"}),
            call(15, labels={"tenant": "a", "region": "eu"}),
        ]
    )
    closed = agg.advance(FAR_FUTURE)
    got = Counter(
        (
            w.series.service,
            w.series.prompt_version,
            tuple(sorted(w.series.labels.items())),
            w.events,
        )
        for w in closed
    )
    assert got == Counter(
        {
            ("svc", "v1", (("region", "eu"), ("tenant", "a")), 2): 1,
            ("svc", "v1", (("tenant", "b"),), 1): 1,
            ("svc", "v2", (), 1): 1,
            ("other", "v1", (("region", "us"),), 1): 1,
            ("svc", "v1", (("region", "eu"), ("tenant", "a")), 1): 1,
        }
    )


def test_the_cardinality_cap_routes_new_series_to_overflow() -> None:
    agg = aggregator(widths_s=[10], label_dimensions=["user"], max_series_per_prompt=2)
    agg.add(
        [call(1, labels={"user": f"u{i}"}) for i in range(5)] + [call(2, labels={"user": "u0"})]
    )
    closed = agg.advance(FAR_FUTURE)
    assert {w.series.labels["user"]: w.events for w in closed} == {"u0": 2, "u1": 1, OVERFLOW: 3}
    assert agg.overflow_events == {("svc", "summarise"): 3}


def test_the_cap_frees_places_once_windows_close() -> None:
    agg = aggregator(
        widths_s=[10], allowed_lateness_s=0, max_series_per_prompt=1, label_dimensions=["user"]
    )
    agg.add([call(1, labels={"user": "a"})])
    agg.add([call(25, labels={"user": "b"})])  # "a" still holds the place
    closed = agg.advance()  # closes [0, 10): "a" leaves
    agg.add([call(26, labels={"user": "c"})])
    closed += agg.advance(FAR_FUTURE)
    assert [(spans([w])[0], w.series.labels["user"]) for w in closed] == [
        ((10, 0), "a"),
        ((10, 20), OVERFLOW),
        ((10, 20), "c"),
    ]


# --- properties -------------------------------------------------------------------------------

# batches of event times in tenths of a second
batches_st = st.lists(st.lists(st.integers(0, 3000), min_size=1, max_size=20), max_size=12)
config_st = st.fixed_dictionaries(
    {
        "widths_s": st.sampled_from([[10], [10, 60], [10, 15], [60]]),
        "allowed_lateness_s": st.sampled_from([0, 5, 30]),
        "rollup_widths_s": st.sampled_from([[], [120]]),
    }
)


def calls(batches: list[list[int]]) -> list[list[CallRecord]]:
    return [
        [call(t / 10, latency_ms=1 + t, status="error" if t % 7 < 1 else "ok") for t in batch]
        for batch in batches
    ]


def run(agg: WindowAggregator, batches: list[list[CallRecord]]) -> list[WindowAggregate]:
    closed = []
    for batch in batches:
        agg.add(batch)
        watermark = agg.watermark_ns
        output = agg.advance()
        assert all(w.window_end_ns <= watermark for w in output)
        closed.extend(output)
    return closed


class Model:
    """What the aggregator should emit, in tenths of a second."""

    def __init__(
        self, widths_s: list[int], allowed_lateness_s: int, rollup_widths_s: list[int]
    ) -> None:
        self.widths = [w * 10 for w in widths_s]
        # rollup width -> its source: the largest width dividing it
        self.rollups = {r * 10: max(w for w in self.widths if r * 10 % w == 0)
                        for r in rollup_widths_s}
        self.lateness = allowed_lateness_s * 10
        self.windows: Counter[tuple[int, float]] = Counter()
        self.late: Counter[int] = Counter()
        self.closed_until = self.latest = 0

    def add(self, batch: list[int]) -> None:
        for t in batch:
            for width in self.widths:
                start = t - t % width
                if start + width <= self.closed_until:
                    self.late[width // 10] += 1
                else:
                    self.windows[width // 10, start / 10] += 1
            for rollup, source in self.rollups.items():  # holds the calls of its source windows
                if t - t % source + source <= self.closed_until:
                    self.late[rollup // 10] += 1
                else:
                    self.windows[rollup // 10, (t - t % rollup) / 10] += 1
        self.latest = max([self.latest, *batch])
        self.closed_until = max(self.closed_until, self.latest - self.lateness)

    def closed(self) -> Counter[tuple[int, float]]:
        """Events of the windows closed so far."""
        until = self.closed_until / 10
        return Counter({k: n for k, n in self.windows.items() if k[1] + k[0] <= until})


def events_by_window(closed: list[WindowAggregate]) -> Counter[tuple[int, float]]:
    return +Counter({span: w.events for span, w in zip(spans(closed), closed, strict=True)})


@given(batches_st, config_st)
@settings(max_examples=80, deadline=None)
def test_windows_match_a_reference_model(batches: list[list[int]], config: dict[str, Any]) -> None:
    agg, model = aggregator(**config), Model(**config)
    closed: list[WindowAggregate] = []
    for batch, events in zip(batches, calls(batches), strict=True):
        model.add(batch)
        closed += run(agg, [events])
        assert events_by_window(closed) == model.closed()  # closed as soon as due, not later
    closed += agg.advance(FAR_FUTURE)
    assert events_by_window(closed) == +model.windows
    assert len(set(spans(closed))) == len(closed)  # each window closed once
    late: Counter[int] = Counter()
    for window in closed:
        late[window.width_s] += window.late_events
    assert +late == +model.late


thresholds_st = st.sampled_from([[], [50.0], [5.0, 150.0]])


@given(batches_st, config_st, st.integers(0, 12), st.integers(0, 12), thresholds_st)
@settings(max_examples=60, deadline=None)
def test_a_restored_checkpoint_gives_identical_outputs(
    batches: list[list[int]], config: dict[str, Any], split: int, more: int,
    thresholds: list[float],
) -> None:
    events = calls(batches)
    first = aggregator(**config, latency_thresholds_ms=thresholds)
    run(first, events[:split])
    saved = [first.snapshot()]
    run(first, events[split : split + more])
    saved.append(first.changes())
    second = WindowAggregator.from_changes(saved, first.settings)
    assert canonical(second) == canonical(first)
    rest = events[split + more :]
    assert run(second, rest) == run(first, rest)
    assert second.advance(FAR_FUTURE) == first.advance(FAR_FUTURE)
    assert canonical(second) == canonical(first)
    assert second.stats == first.stats


def canonical(agg: WindowAggregator) -> dict[str, Any]:
    """The aggregator's whole state, independent of the order it was built in."""
    state = agg.snapshot()
    state["windows"] = sorted(state["windows"], key=repr)
    state["registry"] = sorted(state["registry"], key=repr)
    state["rollups"] = sorted(state["rollups"], key=repr)
    return state


def restored(agg: WindowAggregator, settings: WindowSettings | None = None) -> WindowAggregator:
    return WindowAggregator.from_changes([agg.snapshot()], settings or agg.settings)


def test_restore_keeps_the_cardinality_registry() -> None:
    agg = aggregator(widths_s=[10], label_dimensions=["user"], max_series_per_prompt=1)
    agg.add([call(1, labels={"user": "a"}), call(1, labels={"user": "b"})])
    again = restored(agg)
    again.add([call(2, labels={"user": "c"})])
    assert again.overflow_events == {("svc", "summarise"): 2}


@pytest.mark.parametrize("change", [{"widths_s": [10]}, {"label_dimensions": ["tenant"]}])
def test_restore_refuses_state_of_other_windows(change: dict[str, Any]) -> None:
    agg = aggregator()
    agg.add([call(1)])
    with pytest.raises(StateError, match="widths or label dimensions"):
        restored(agg, WindowSettings.model_validate(change))


def test_restore_accepts_a_new_cap_and_lateness() -> None:
    agg = aggregator()
    agg.add([call(1)])
    settings = WindowSettings(allowed_lateness_s=1, max_series_per_prompt=5)
    assert restored(agg, settings).watermark_ns == ns(0)


def test_restore_refuses_an_unknown_format() -> None:
    with pytest.raises(StateError, match="format"):
        WindowAggregator.from_changes([{"format": 99}], WindowSettings())


@given(batches_st, st.sampled_from([[10], [10, 60]]), thresholds_st)
@settings(max_examples=60, deadline=None)
def test_every_window_counts_exactly_its_calls_over_each_configured_threshold(
    batches: list[list[int]], widths: list[int], thresholds: list[float]
) -> None:
    agg = aggregator(widths_s=widths, allowed_lateness_s=600, latency_thresholds_ms=thresholds)
    closed = run(agg, calls(batches)) + agg.advance(FAR_FUTURE)
    everything = [t for batch in batches for t in batch]  # tenths of a second; latency 1 + t
    for window in closed:
        start, end = ((n - T0) * 10 // NS_PER_S for n in (window.window_start_ns,
                                                           window.window_end_ns))
        inside = [t for t in everything if start <= t < end]
        assert window.latency_over_ms == {th: float(sum(1 + t > th for t in inside))
                                          for th in thresholds}
        assert window.observed_events["latency_ms"] == window.events == len(inside)


def test_latency_thresholds_are_validated_and_merged() -> None:
    windows = WindowSettings(latency_thresholds_ms=[4000, 2500, 4000])
    assert windows.latency_thresholds_ms == [2500.0, 4000.0]
    assert windows.with_latency_thresholds([1000.0, 2500.0]).latency_thresholds_ms == [
        1000.0, 2500.0, 4000.0]
    with pytest.raises(ValueError, match="positive"):
        WindowSettings(latency_thresholds_ms=[0.0])
