"""A bad quality score, or an evaluator that fails, drops the score and never its call."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptprof import Call
from promptprof._event import CallEvent, QualityEvent
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder, checked_score, register_spec, score_drops

SCORE_KEY = "promptprof.quality.score"


class _Sink:
    def __init__(self) -> None:
        self.items: list[object] = []

    def enqueue(self, item: object) -> None:
        self.items.append(item)


def _builder() -> EventBuilder:
    return EventBuilder("checkout", "test", False, None)


def _wire(event: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(event))
    return parsed


def _dropped(reason: str) -> int:
    by_reason: dict[str, int] = score_drops()["scores_dropped_by_reason"]
    return by_reason.get(reason, 0)


anything = (
    st.none()
    | st.text(max_size=5)
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.just(math.nan)
)


def _expected(value: object) -> float | str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not_a_number"
    if not math.isfinite(value):
        return "not_finite"
    return float(value) if 0 <= value <= 1 else "out_of_range"


@given(value=anything)
def test_checked_score_accepts_only_finite_numbers_in_0_1(value: object) -> None:
    assert checked_score(value) == _expected(value)


@given(value=anything, late=st.booleans())
def test_a_bad_score_is_dropped_and_counted_and_the_call_is_kept(value: object, late: bool) -> None:
    sink = _Sink()
    call = Call(sink, make_spec("faq", "v1", "gpt-4o", "openai"), 1.0)
    call.set_usage(10, 5)
    if late:
        call.finish()
    expected = _expected(value)
    before = _dropped(str(expected))
    call.score(value, "judge")  # type: ignore[arg-type]  # a caller's bug, on purpose
    call.finish()
    event = CallEvent.model_validate(_wire(_builder().build(call)))
    assert event.latency_ms >= 0 and event.input_tokens == 10
    if isinstance(expected, str):
        assert _dropped(expected) == before + 1
        assert event.quality_score is None and sink.items == [call]
    elif late:
        quality = QualityEvent.model_validate(_wire(_builder().build(sink.items[-1])))
        assert quality.quality_score == expected
    else:
        assert event.quality_score == expected


def _boom(result: object) -> float:
    raise RuntimeError("judge unreachable")


@pytest.mark.parametrize(
    ("evaluator", "reason"),
    [
        (lambda result: None, "not_a_number"),
        (lambda result: "0.8", "not_a_number"),
        (lambda result: (0.5, 7), "not_a_number"),
        (lambda result: math.nan, "not_finite"),
        (lambda result: 5, "out_of_range"),
        (lambda result: (-0.1, "judge"), "out_of_range"),
        (_boom, "evaluator_raised"),
    ],
)
def test_a_failing_evaluator_drops_only_the_score(evaluator: Any, reason: str) -> None:
    spec = make_spec("faq", "v1", "gpt-4o", "openai", evaluator=evaluator)
    before = score_drops()
    for item in (
        (register_spec(spec), 0, 2_000_000, None, "answer", 1.0),
        _finished(spec),
    ):
        event = CallEvent.model_validate(_wire(_builder().build(item)))
        assert event.quality_score is None and event.latency_ms >= 0
    after = score_drops()
    assert after["scores_dropped"] == before["scores_dropped"] + 2
    assert after["scores_dropped_by_reason"][reason] == (
        before["scores_dropped_by_reason"].get(reason, 0) + 2
    )


def _finished(spec: Any) -> Call:
    call = Call(_Sink(), spec, 1.0)
    call.result = "answer"
    call.finish()
    return call


def test_a_good_evaluator_score_and_metric_are_sent() -> None:
    spec = make_spec("faq", "v1", evaluator=lambda result: (1, "exact"))
    event = _builder().build((register_spec(spec), 0, 1000, None, "x", 1.0))
    assert (event[SCORE_KEY], event["promptprof.quality.metric"]) == (1.0, "exact")
