"""The call-event contract: built events validate, the schema file is current, envelopes decode."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from promptprof import Call
from promptprof._envelope import EnvelopeError, decode_record, encode_envelope
from promptprof._event import CallEvent, QualityEvent, series_key
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder, InvalidValue, register_spec
from promptprof._schema import SCHEMA_FILE, render_schema


class _Sink:
    def __init__(self) -> None:
        self.items: list[object] = []

    def enqueue(self, item: object) -> None:
        self.items.append(item)


def _builder(capture_text: bool = False) -> EventBuilder:
    return EventBuilder("checkout", "test", capture_text, lambda s: s.replace("secret", "***"))


def test_schema_file_is_current() -> None:
    assert SCHEMA_FILE.read_bytes() == render_schema(), "run: promptprof schema --out " + str(
        SCHEMA_FILE
    )


texts = st.text(min_size=1, max_size=30) | st.text(
    alphabet=st.sampled_from('ab\\ ,="\n\r\té😀'), min_size=1, max_size=8
)


@given(
    prompt=texts, version=texts, latency_ns=st.integers(0, 10**11),
    tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    error=st.none() | st.sampled_from(["RateLimitError", "TimeoutError"]) | texts,
    quality=st.none() | st.floats(0, 1),
    labels=st.dictionaries(texts, texts, max_size=20),
)
def test_the_builder_refuses_exactly_the_calls_the_contract_refuses(
    prompt: str, version: str, latency_ns: int, tokens: tuple[int, int], error: str | None,
    quality: float | None, labels: dict[str, str],
) -> None:
    sink = _Sink()
    call = Call(sink, make_spec(prompt, version, "gpt-4o", "openai", labels=labels), 0.5)
    call.set_usage(*tokens)
    if error:
        call.set_error(error)
    if quality is not None:
        call.score(quality, "rouge")
    call.end_ns = call.start_ns + latency_ns
    try:
        event = _builder().build(call)
    except InvalidValue:  # the sender drops it and counts it in dropped_invalid_value
        bare = {"promptprof.prompt.id": prompt, "promptprof.prompt.version": version,
                "error.type": error, "promptprof.labels": dict(list(labels.items())[:16])}
        with pytest.raises(ValidationError, match=r"should match pattern|at most 64"):
            CallEvent.model_validate({**_builder().build(Call(sink, make_spec("p", "v"), 1)),
                                      **bare})
        return
    parsed = CallEvent.model_validate(orjson.loads(orjson.dumps(event)))
    assert parsed.prompt_id == prompt and parsed.prompt_version == version
    assert parsed.labels == dict(list(labels.items())[:16])
    assert math.isclose(parsed.latency_ms, latency_ns / 1e6)
    assert parsed.status == ("error" if error else "ok")
    assert parsed.cost_usd is not None and parsed.cost_usd >= 0
    assert parsed.weight == 2.0


def test_decorator_tuple_and_late_score_build_valid_events() -> None:
    sink = _Sink()
    spec = make_spec("faq", "v1", evaluator=lambda result: 0.75)
    event = _builder().build((register_spec(spec), 1_000, 3_000_000, None, "answer", 1.0))
    assert CallEvent.model_validate(event).quality_score == 0.75
    call = Call(sink, spec, 1.0)
    call.finish()
    call.score(0.4, "judge")
    quality = _builder().build(sink.items[-1])
    parsed = QualityEvent.model_validate(quality)
    assert parsed.event_id == call.event_id and parsed.quality_score == 0.4


def test_text_is_absent_by_default_and_redacted_when_captured() -> None:
    call = Call(_Sink(), make_spec("faq", "v1"), 1.0)
    call.set_text("my secret prompt", "the answer")
    call.finish()
    assert "gen_ai.input.messages" not in _builder().build(call)
    captured = _builder(capture_text=True).build(call)
    assert captured["gen_ai.input.messages"] == "my *** prompt"
    assert captured["promptprof.tokens.estimated"] is True


def test_unknown_model_costs_null_not_a_guess() -> None:
    call = Call(_Sink(), make_spec("faq", "v1", "my-private-model", "acme"), 1.0)
    call.set_usage(100, 10)
    call.finish()
    assert _builder().build(call)["promptprof.cost.usd"] is None


def test_failing_evaluator_keeps_the_call() -> None:
    def broken(result: object) -> float:
        raise RuntimeError("bug")

    spec = make_spec("faq", "v1", evaluator=broken)
    event = _builder().build((register_spec(spec), 0, 1000, None, "x", 1.0))
    assert "promptprof.quality.score" not in event


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"promptprof.latency_ms": -1}, "latency_ms"),
        ({"promptprof.latency_ms": float("nan")}, "latency_ms"),
        ({"schema_version": 2}, "schema_version"),
        ({"promptprof.quality.score": 1.5}, "quality"),
        ({"gen_ai.usage.input_tokens": -3}, "input_tokens"),
    ],
)
def test_invalid_events_are_rejected_with_the_field(patch: dict[str, object], field: str) -> None:
    event = _builder().build((register_spec(make_spec("faq", "v1")), 0, 1000, None, None, 1.0))
    with pytest.raises(ValidationError) as info:
        CallEvent.model_validate({**event, **patch})
    assert field.split("_")[0] in str(info.value)


def test_envelope_round_trip_and_single_event() -> None:
    events = [_builder().build((register_spec(make_spec("faq", "v1")), 0, 1000, None, None, 1.0))]
    assert decode_record(encode_envelope(events)) == events
    assert decode_record(orjson.dumps(events[0])) == events
    assert series_key(events[0]) == b"checkout\x1ffaq\x1fv1\x1funknown"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1,2]", b'{"envelope":"promptprof.batch","envelope_version":9,"events":[]}',
     b'{"envelope":"promptprof.batch","envelope_version":1,"events":{}}', b'{"hello":1}'],
)
def test_bad_records_raise_envelope_error(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_record(raw)
