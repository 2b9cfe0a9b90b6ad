"""Window figures: accumulation, rollup and serialisation of closed windows."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.ingest.validation import CallRecord
from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import (
    CALL_FIELDS,
    MAX_ERROR_TYPES,
    OTHER_ERRORS,
    Accumulator,
    SeriesTags,
    WindowAggregate,
    rollup,
)
from promptprof_processor.windows.sketches import decode_sketch, encode_sketch

from .factories import T0, add_calls, add_quality, call, quality

TAGS = SeriesTags(service="svc", prompt_id="summarise", prompt_version="v1", model="gpt-4o-mini")


def finish(acc: Accumulator, width_s: int = 10, start: int = T0) -> WindowAggregate:
    return acc.finish(TAGS, start, start + width_s * NS_PER_S, late_events=0)


def test_counts_errors_costs_and_tokens() -> None:
    acc = Accumulator()
    add_calls(acc,
        [
            call(latency_ms=100, input_tokens=100, output_tokens=10, cost_usd=0.01),
            call(latency_ms=200, input_tokens=300, output_tokens=30, cost_usd=0.03),
            call(latency_ms=300, status="error", error_type="Timeout"),
            call(latency_ms=400, status="error"),
        ]
    )
    w = finish(acc)
    assert (w.events, w.calls, w.errors, w.error_rate) == (4, 4.0, 2.0, 0.5)
    assert w.errors_by_type == {"Timeout": 1.0, "unknown": 1.0}
    assert w.cost_usd_sum == pytest.approx(0.04)
    assert w.cost_per_call_usd == pytest.approx(0.02)
    assert (w.cost_known_calls, w.cost_unknown_calls) == (2.0, 2.0)
    assert w.input_tokens is not None and w.output_tokens is not None
    assert (w.input_tokens.sum, w.input_tokens.mean, w.input_tokens.calls) == (400, 200, 2)
    assert w.output_tokens.sum == 40
    assert w.input_tokens.p95 == pytest.approx(100, rel=0.01)  # rank floor(0.95 * (2 - 1))
    assert w.latency_ms is not None
    assert w.latency_ms.max == 400
    assert w.latency_ms.p50 == pytest.approx(200, rel=0.01)
    assert w.ttft_ms is None and w.ttft_calls == 0
    assert w.quality_mean is None and w.quality_scored == 0


def test_sampled_events_are_weighted() -> None:
    acc = Accumulator()
    add_calls(acc,
        [
            call(latency_ms=100, sample_rate=0.25, cost_usd=1.0, status="error"),
            call(latency_ms=100, sample_rate=0.5),
            call(latency_ms=100, ttft_ms=10.0),
        ]
    )
    w = finish(acc)
    assert (w.events, w.calls, w.errors) == (3, 7.0, 4.0)
    assert w.error_rate == pytest.approx(4 / 7)
    assert (w.cost_usd_sum, w.cost_known_calls, w.cost_unknown_calls) == (4.0, 4.0, 3.0)
    assert w.cost_per_call_usd == 1.0
    assert w.ttft_calls == 1.0


def test_quality_from_calls_and_quality_events() -> None:
    acc = Accumulator()
    add_calls(acc, [call(quality_score=0.2), call(), call(quality_score=0.8)])
    add_quality(acc, [quality(0, 0.5), quality(0, 1.0, sample_rate=0.5)])
    w = finish(acc)
    assert w.quality_scored == 5.0
    assert w.quality_mean == pytest.approx((0.2 + 0.8 + 0.5 + 2 * 1.0) / 5)
    assert w.quality_p10 == pytest.approx(0.2, rel=0.01)


def test_quality_only_window_has_no_call_figures() -> None:
    acc = Accumulator()
    add_quality(acc, [quality(0, 0.5)])
    w = finish(acc)
    assert (w.events, w.calls, w.error_rate, w.latency_ms) == (0, 0.0, None, None)
    assert w.quality_mean == 0.5


def test_error_types_are_capped() -> None:
    acc = Accumulator()
    add_calls(acc, [call(status="error", error_type=f"E{i}") for i in range(MAX_ERROR_TYPES + 5)])
    w = finish(acc)
    assert len(w.errors_by_type) == MAX_ERROR_TYPES + 1
    assert w.errors_by_type[OTHER_ERRORS] == 5.0
    assert w.errors == MAX_ERROR_TYPES + 5


def test_window_bytes_round_trip() -> None:
    acc = Accumulator()
    add_calls(acc, [call(latency_ms=120, ttft_ms=30.0, input_tokens=7, status="error")])
    add_quality(acc, [quality(0, 0.9)])
    window = finish(acc)
    restored = WindowAggregate.from_bytes(window.to_bytes())
    assert restored == window
    assert restored.to_bytes() == window.to_bytes()


def test_accumulator_state_round_trip() -> None:
    acc = Accumulator()
    add_calls(acc, [call(latency_ms=5.0, output_tokens=3, cost_usd=0.5, status="error")])
    acc.add_late(10, 2)
    restored = Accumulator.from_state(orjson.loads(orjson.dumps(acc.to_state())))
    assert restored.to_state() == acc.to_state()
    assert finish(restored) == finish(acc)


# --- rollup ---------------------------------------------------------------------------------

call_st = st.builds(
    lambda at, latency, tokens, cost, failed, rate, score: call(
        at,
        latency_ms=latency,
        input_tokens=tokens,
        output_tokens=tokens // 3 if tokens else None,
        cost_usd=cost,
        status="error" if failed else "ok",
        error_type="Timeout" if failed == 1 else None,
        sample_rate=rate,
        quality_score=score,
    ),
    st.floats(0, 59.999),
    st.floats(0.5, 60_000),
    st.none() | st.integers(0, 4000),
    st.none() | st.floats(0, 0.1),
    st.integers(0, 9).map(lambda n: n if n < 2 else 0),
    st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.1]),
    st.none() | st.floats(0, 1),
)


THRESHOLDS = (250.0, 4000.0)


def assert_figures_equal(actual: WindowAggregate, expected: WindowAggregate) -> None:
    """Equal except for float rounding in sums (sketch bins must be identical, whichever of
    the two encodings carries them)."""
    a, e = actual.model_dump(), expected.model_dump()
    for dump in (a, e):
        dump["sketches"] = {k: encode_sketch(decode_sketch(v)) for k, v in dump["sketches"].items()}
    for name in ("s", "n", "pn", "z"):
        for sketch in (*a["sketches"].values(), *e["sketches"].values()):
            sketch.pop(name)
    assert_close(a, e, "window")


def assert_close(a: Any, e: Any, path: str) -> None:
    if isinstance(e, dict):
        assert a.keys() == e.keys(), path
        for key in e:
            assert_close(a[key], e[key], f"{path}.{key}")
    elif isinstance(e, float):
        assert math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-12), path
    else:
        assert a == e, path


@given(st.lists(call_st, min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_rollup_equals_aggregating_the_union(events: list[CallRecord]) -> None:
    parts: dict[int, list[CallRecord]] = {}
    for event in events:
        offset = event["start_time_unix_nano"] - T0
        parts.setdefault(offset - offset % (10 * NS_PER_S), []).append(event)
    windows = []
    for start, group in parts.items():
        acc = Accumulator()
        add_calls(acc, group, THRESHOLDS)
        windows.append(finish(acc, 10, T0 + start))
    whole = Accumulator()
    add_calls(whole, events, THRESHOLDS)
    expected = finish(whole, 60)
    assert_figures_equal(rollup(windows, T0, T0 + 60 * NS_PER_S), expected)


def test_rollup_defaults_to_the_span_of_its_windows_and_sums_late_events() -> None:
    windows = []
    for i in (1, 2):
        acc = Accumulator()
        add_calls(acc, [call(10 * i)])
        windows.append(acc.finish(TAGS, T0 + 10 * i * NS_PER_S, T0 + 10 * (i + 1) * NS_PER_S, i))
    rolled = rollup(windows)
    assert (rolled.window_start_ns, rolled.window_end_ns) == (
        T0 + 10 * NS_PER_S,
        T0 + 30 * NS_PER_S,
    )
    assert (rolled.width_s, rolled.events, rolled.late_events) == (20, 2, 3)


def test_rollup_of_rollups_is_a_rollup() -> None:
    tens = []
    for i in range(12):
        acc = Accumulator()
        add_calls(acc, [call(10 * i, latency_ms=float(i + 1))])
        tens.append(finish(acc, 10, T0 + 10 * i * NS_PER_S))
    minutes = [rollup(tens[:6], T0, T0 + 60 * NS_PER_S), rollup(tens[6:])]
    assert_figures_equal(rollup(minutes), rollup(tens))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "at least one"),
        ("series", "one series"),
        ("overlap", "non-overlapping"),
        ("bounds", "within"),
    ],
)
def test_rollup_rejects_bad_input(case: str, message: str) -> None:
    acc = Accumulator()
    add_calls(acc, [call()])
    window = finish(acc)
    other = acc.finish(TAGS.model_copy(update={"model": "x"}), T0, T0 + 10 * NS_PER_S, 0)
    args: dict[str, tuple[list[WindowAggregate], int | None]] = {
        "empty": ([], None),
        "series": ([window, other], None),
        "overlap": ([window, window], None),
        "bounds": ([window], T0 + 1),
    }
    windows, start = args[case]
    with pytest.raises(ValueError, match=message):
        rollup(windows, start_ns=start)


def test_pending_rows_survive_a_state_round_trip_and_reading_leaves_them_pending() -> None:
    acc = Accumulator()
    acc.add_rows([tuple(call(i)[name] for name in CALL_FIELDS) for i in range(3)])
    before = finish(acc)
    assert len(acc.rows) == 3
    restored = Accumulator.from_state(orjson.loads(orjson.dumps(acc.to_state())))
    assert finish(restored) == before
    assert len(restored.rows) == 3


# --- observed events and exact counts over latency thresholds --------------------------------


@given(st.lists(call_st, min_size=1, max_size=60), st.lists(st.floats(0.5, 60_000), max_size=3))
@settings(max_examples=80, deadline=None)
def test_calls_over_each_threshold_are_counted_exactly(
    events: list[CallRecord], thresholds: list[float]
) -> None:
    acc = Accumulator()
    half = len(events) // 2
    for part in (events[:half], events[half:]):
        if part:
            add_calls(acc, part, thresholds)
    window = finish(acc)
    assert set(window.latency_over_ms) == set(thresholds)
    for threshold in thresholds:
        slower = [1 / e["sample_rate"] for e in events if e["latency_ms"] > threshold]
        assert window.latency_over_ms[threshold] == pytest.approx(math.fsum(slower))


@given(st.lists(call_st, min_size=1, max_size=60))
@settings(max_examples=80, deadline=None)
def test_observed_events_count_the_events_that_carried_each_figure(
    events: list[CallRecord],
) -> None:
    """Unweighted, whatever the sample rates: a figure is judged on its own measurements."""
    acc = Accumulator()
    add_calls(acc, events)
    window = finish(acc)

    def carrying(field: str) -> int:
        return sum(e.get(field) is not None for e in events)

    expected = {
        "latency_ms": len(events), "input_tokens": carrying("input_tokens"),
        "output_tokens": carrying("output_tokens"), "cost_usd": carrying("cost_usd"),
        "quality": carrying("quality_score"),
        "errors": sum(e["status"] == "error" for e in events),
    }
    assert window.observed_events == {k: n for k, n in expected.items() if n}


def test_three_of_forty_sampled_events_carry_ttft() -> None:
    acc = Accumulator()
    add_calls(acc, [call(ttft_ms=20.0 if i < 3 else None, sample_rate=0.1) for i in range(40)])
    window = finish(acc)
    assert (window.observed_events["ttft_ms"], window.ttft_calls) == (3, 30.0)
    assert (window.observed_events["latency_ms"], window.calls) == (40, 400.0)


def test_a_threshold_counted_on_part_of_the_calls_is_not_claimed() -> None:
    counted, uncounted = Accumulator(), Accumulator()
    add_calls(counted, [call(latency_ms=500)], [100.0])
    add_calls(uncounted, [call(latency_ms=500)])
    merged = Accumulator()
    for part in (counted, uncounted):
        merged.merge(part)
    assert finish(merged).latency_over_ms == {}
    scores_only = Accumulator()  # no call event: nothing to count over a threshold
    add_quality(scores_only, [quality(0, 0.5)])
    counted.merge(scores_only)
    assert finish(counted).latency_over_ms == {100.0: 1.0}
    add_calls(uncounted, [call(latency_ms=500)], [100.0])  # restored from before the threshold
    assert finish(uncounted).latency_over_ms == {}


def test_new_figures_survive_state_and_bytes_and_old_state_restores_without_them() -> None:
    acc = Accumulator()
    add_calls(acc, [call(latency_ms=500, ttft_ms=50.0, sample_rate=0.5)], [100.0, 1000.0])
    state = orjson.loads(orjson.dumps(acc.to_state()))
    restored = Accumulator.from_state(state)
    assert finish(restored) == finish(acc)
    window = finish(acc)
    assert window.latency_over_ms == {100.0: 2.0, 1000.0: 0.0}
    assert WindowAggregate.from_bytes(window.to_bytes()) == window
    old = Accumulator.from_state({k: v for k, v in state.items()
                                  if k not in ("observed_events", "latency_over_ms")})
    assert (old.observed_events, old.latency_over_ms) == ({}, {})


@given(st.lists(call_st, min_size=1, max_size=600), st.lists(st.integers(1, 300), min_size=1),
       st.lists(st.floats(0.5, 60_000), max_size=3))
@settings(max_examples=40, deadline=None)
def test_rows_in_any_chunks_give_the_figures_and_threshold_counts_of_the_columns(
    events: list[CallRecord], chunks: list[int], thresholds: list[float]
) -> None:
    rows = [tuple(e[name] for name in CALL_FIELDS) for e in events]
    by_rows, taken = Accumulator(), 0
    for size in chunks * len(rows):
        if taken >= len(rows):
            break
        by_rows.add_rows(rows[taken:taken + size], thresholds)
        taken += size
    by_columns = Accumulator()
    add_calls(by_columns, events, thresholds)
    assert_figures_equal(finish(by_rows), finish(by_columns))
