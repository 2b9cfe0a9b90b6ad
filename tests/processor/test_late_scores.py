"""Late scores: a quality score counts in its call's window within the quality lateness, the
window's quality fields are updated (not a second point), and later scores are dead-lettered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof._envelope import encode_rows
from promptprof._event import CallEvent, QualityEvent
from promptprof_processor.ingest.validation import Record
from promptprof_processor.runtime.partition import PartitionRun
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.sink.lineprotocol import window_lines
from promptprof_processor.windows.aggregator import WindowAggregator
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_processor.windows.late_scores import (
    EVICTED,
    NOT_HELD,
    TOO_LATE,
    QualityUpdate,
    is_quality_update,
)

from .factories import T0, call, ns, quality
from .runs import clock

FAR_FUTURE = T0 + 10**6 * NS_PER_S
QUALITY = ("quality_mean", "quality_p10", "quality_scored")
Key = tuple[int, int, str]


def aggregator(**overrides: object) -> WindowAggregator:
    return WindowAggregator(WindowSettings.model_validate(overrides))


def points(outputs: list[WindowAggregate | QualityUpdate]) -> dict[Key, dict[str, Any]]:
    """What InfluxDB holds after these writes, in order: a window writes every field of its
    point, an update its quality fields."""
    held: dict[Key, dict[str, Any]] = {}
    for out in outputs:
        key = (out.width_s, out.window_start_ns, out.series.prompt_id)
        figures = out.model_dump(include=set(QUALITY) if isinstance(out, QualityUpdate) else None,
                                 exclude={"sketches"})
        held.setdefault(key, {}).update(figures)
    return held


def due(agg: WindowAggregator, at_s: float) -> tuple[list[WindowAggregate], list[QualityUpdate]]:
    """Advance the watermark into the base window of ``at_s``: the windows it closes and the
    updates that are then due."""
    return agg.advance(ns(at_s)), agg.quality_updates()


def quality_of(view: dict[Key, dict[str, Any]]) -> dict[Key, tuple[Any, ...]]:
    return {key: tuple(fields[f] for f in QUALITY) for key, fields in view.items()
            if fields["quality_scored"]}


# calls at 0..60 s, scores of some of them arriving up to 600 s later, scored 0..1
calls = st.lists(st.tuples(st.floats(0, 60), st.sampled_from(["a", "b"])), min_size=1,
                 max_size=30)


@settings(max_examples=120, deadline=None)
@given(calls, st.data())
def test_late_scores_give_the_quality_of_scores_that_came_on_time(
    made: list[tuple[float, str]], data: st.DataObject
) -> None:
    delays = data.draw(st.lists(st.one_of(st.none(), st.floats(0, 600)), min_size=len(made),
                                max_size=len(made)))
    values = data.draw(st.lists(st.floats(0, 1), min_size=len(made), max_size=len(made)))
    arrivals: list[tuple[float, Record]] = [(at, call(at, prompt_id=p)) for at, p in made]
    arrivals += [(at + delay, quality(at, score, prompt_id=p))
                 for (at, p), delay, score in zip(made, delays, values, strict=True)
                 if delay is not None]
    arrivals.sort(key=lambda pair: pair[0])
    late = aggregator(widths_s=[10, 60], allowed_lateness_s=2, quality_lateness_s=700)
    outputs: list[WindowAggregate | QualityUpdate] = []
    for arrived, event in arrivals:  # one event a record, the clock at its arrival
        assert late.add([event]) == []
        outputs += late.advance(min(late.watermark_ns, ns(arrived) - 2 * NS_PER_S))
        outputs += late.quality_updates()
    outputs += late.advance(FAR_FUTURE)
    outputs += late.quality_updates()
    on_time = aggregator(widths_s=[10, 60], allowed_lateness_s=1000)
    on_time.add([event for _, event in arrivals])
    expected = points(list(on_time.advance(FAR_FUTURE)))
    got = quality_of(points(outputs))
    assert got.keys() == quality_of(expected).keys()
    for key, figures in quality_of(expected).items():  # sums: up to float rounding
        assert got[key] == pytest.approx(figures, rel=1e-12, abs=0.0), key
    assert late.stats.dropped_events == 0
    scored_late = sum(isinstance(o, QualityUpdate) for o in outputs)
    assert (late.stats.scores_landed_late > 0) == (scored_late > 0)


def test_a_late_score_updates_its_window_and_one_past_the_lateness_is_returned() -> None:
    agg = aggregator(widths_s=[10, 60], rollup_widths_s=[], allowed_lateness_s=0,
                     quality_lateness_s=100)
    agg.add([call(1), call(1.5), quality(1, 0.2)])
    agg.add([call(75)])
    closed = agg.advance()  # [0, 10) and [0, 60) closed with one score each
    assert [(w.width_s, w.quality_scored) for w in closed if w.window_start_ns == T0] == [
        (10, 1.0), (60, 1.0)]
    assert agg.quality_updates() == []  # nothing landed yet
    assert agg.add([quality(2, 0.6)]) == []
    assert agg.quality_updates() == []  # due once the watermark enters the next base window
    _, updates = due(agg, 80)
    assert [(u.width_s, u.window_start_ns, u.quality_scored) for u in updates] == [
        (10, T0, 2.0), (60, T0, 2.0)]
    assert updates[0].quality_mean is not None and abs(updates[0].quality_mean - 0.4) < 1e-9
    assert due(agg, 90)[1] == []  # each landing gives one update
    agg.add([call(115)])
    agg.advance()  # watermark 115: [0, 10) took scores until 110, [0, 60) does until 160
    agg.add([quality(3, 1.0)])
    closed, updates = due(agg, 120)
    assert [(u.width_s, u.quality_scored) for u in updates] == [(60, 3.0)]
    agg.add([call(170)])
    later = agg.advance()
    too_late = quality(4, 1.0)
    assert agg.add([too_late]) == [(too_late, TOO_LATE)]
    assert agg.quality_updates() == []
    assert (agg.stats.scores_landed_late, agg.stats.dropped_events) == (2, 1)
    later += closed + agg.advance(FAR_FUTURE)  # late counts: in the window open when they came
    assert [(w.width_s, (w.window_start_ns - T0) // NS_PER_S, w.late_events)
            for w in sorted(later, key=lambda w: (w.width_s, w.window_start_ns))
            if w.late_events] == [(10, 110, 1), (10, 170, 1), (60, 120, 1)]


def test_past_the_cap_the_earliest_window_is_let_go_and_its_late_scores_refused() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=0, max_held_quality_windows=2)
    agg.add([call(at) for at in (1, 2, 11, 12, 21, 22, 31)] + [quality(1, 0.5),
                                                                  quality(11, 0.5)])
    agg.advance()  # [0, 10), [10, 20), [20, 30) closed with unscored calls: [0, 10) let go
    assert len(agg.late_scores) == 2
    assert agg.add([score := quality(2, 0.9)]) == [(score, EVICTED)]
    agg.add([quality(12, 0.9), call(45)])
    agg.advance()  # [30, 40) held: [10, 20) let go, after its update was due
    agg.add([quality(31, 0.1)])
    assert [(u.window_start_ns - T0, u.quality_scored) for u in agg.quality_updates()] == [
        (10 * NS_PER_S, 2.0), (30 * NS_PER_S, 1.0)]
    assert agg.add([late := quality(13, 0.9)]) == [(late, EVICTED)]
    restored = WindowAggregator.from_changes([agg.snapshot()], agg.settings)
    again = quality(14, 0.9)
    assert restored.add([again]) == agg.add([again]) == [(again, EVICTED)]


def test_a_score_for_a_window_closed_without_scores_starts_its_quality() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=0)
    agg.add([call(1), call(11)])
    (closed,) = agg.advance()
    assert closed.quality_scored == 0
    agg.add([quality(1, 0.5, sample_rate=0.5)])
    (update,) = due(agg, 20)[1]
    assert (update.quality_scored, update.quality_mean) == (2.0, 0.5)  # weighted by 1/rate


def test_held_windows_come_back_from_a_snapshot_and_the_changes_since() -> None:
    config = WindowSettings(widths_s=[10], allowed_lateness_s=0, quality_lateness_s=60)
    agg = WindowAggregator(config)
    agg.add([call(1), call(2), quality(1, 0.1), call(11)])
    agg.advance()
    base = agg.snapshot()
    agg.add([quality(2, 0.3)])
    agg.add([quality(11, 0.4), call(13), call(25)])
    agg.advance()
    restored = WindowAggregator.from_changes([base, agg.changes()], config)
    assert len(restored.late_scores) == len(agg.late_scores) == 2
    for each in (agg, restored):  # the update of 0.1 and 0.3 is still pending in both
        each.add([quality(3, 0.8)])
    (update,) = due(agg, 30)[1]
    assert due(restored, 30)[1] == [update] and update.quality_scored == 3.0


def test_a_window_closed_with_every_successful_call_scored_is_not_held() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=0)
    agg.add([call(1), quality(1, 0.5), call(2, status="error", error_type="timeout"), call(11)])
    agg.advance()
    assert len(agg.late_scores) == 0
    assert agg.add([score := quality(2, 0.9)]) == [(score, NOT_HELD)]


def test_no_window_is_held_when_the_quality_lateness_is_the_lateness() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=30, quality_lateness_s=30)
    agg.add([call(1), quality(1, 0.1), call(45)])
    agg.advance()
    assert len(agg.late_scores) == 0
    assert len(agg.add([quality(2, 0.3)])) == 1


def test_a_partition_run_dead_letters_a_score_past_the_lateness_with_its_reason() -> None:
    config = WindowSettings(widths_s=[10], allowed_lateness_s=0, quality_lateness_s=20)
    run = PartitionRun(0, config, next_offset=0)
    wire = [_wire(call(1)), _wire(call(40))]
    run.take(0, encode_rows(wire), clock(ns(41), 0.0))
    score = _wire(quality(1, 0.7))
    outputs = run.take(1, encode_rows([score]), clock(ns(42), 0.0))
    (dead,) = [o.rejected for o in outputs if o.rejected is not None]
    assert dead.reason == TOO_LATE and orjson.loads(dead.value)["quality_score"] == 0.7
    assert not [o for o in outputs if o.quality is not None]


def test_an_update_is_written_as_the_quality_fields_of_its_windows_point() -> None:
    agg = aggregator(widths_s=[10], allowed_lateness_s=0)
    agg.add([call(1), call(12)])
    (window,) = agg.advance()
    agg.add([quality(1, 0.25)])
    (update,) = due(agg, 20)[1]
    assert is_quality_update(update.to_bytes()) and not is_quality_update(window.to_bytes())
    assert QualityUpdate.from_bytes(update.to_bytes()) == update
    (window_line, *_) = window_lines(window)
    (update_line,) = window_lines(update)
    series, fields, timestamp = update_line.split(" ")
    assert window_line.startswith(series + " ") and window_line.endswith(" " + timestamp)
    assert fields == "quality_mean=0.25,quality_p10=0.25,quality_scored=1.0"


def _wire(record: Record) -> dict[str, Any]:
    """An event as the producer sends it (by alias)."""
    model: type[CallEvent | QualityEvent] = QualityEvent if "kind" in record else CallEvent
    return model.model_validate(record).model_dump(by_alias=True)
