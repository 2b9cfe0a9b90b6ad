"""The span-to-call mapping, on spans made by hand with the SDK: old and new attribute names,
the prompt mapping and its fallback, and a bridge that never raises into its host."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from integrations.conftest import event_of, events_of, recording_profiler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from promptprof import Profiler
from promptprof.integrations import otel
from promptprof.integrations._genai import GenAIMapping, SpanData, error_name, facts_from_span
from promptprof.integrations.otel import GenAISpanProcessor, prompt

NEW = {
    "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 9,
    "gen_ai.usage.cache_read.input_tokens": 5, "gen_ai.response.time_to_first_chunk": 0.002,
}
OLD = {
    "gen_ai.system": "OpenAI", "llm.request.type": "chat",
    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.prompt_tokens": 25, "gen_ai.usage.completion_tokens": 9,
    "gen_ai.usage.cache_read_input_tokens": 5, "gen_ai.server.time_to_first_token": 0.002,
}


@pytest.fixture
def profiler() -> Iterator[Profiler]:
    made = recording_profiler()
    yield made
    made.close(1)


@pytest.fixture
def bridge(profiler: Profiler) -> GenAISpanProcessor:
    return GenAISpanProcessor(profiler=profiler)


@pytest.fixture
def provider(bridge: GenAISpanProcessor) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(bridge)
    yield made
    made.shutdown()


def emit(provider: TracerProvider, attributes: dict[str, Any], error: bool = False) -> None:
    with provider.get_tracer("t").start_as_current_span("llm", attributes=attributes) as span:
        if error:
            span.set_status(Status(StatusCode.ERROR, "boom"))


def without_ids(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in {
        "event_id", "start_time_unix_nano", "promptprof.latency_ms",
        "gen_ai.server.time_to_first_token"}}


def test_old_and_new_names_give_the_same_event(
    provider: TracerProvider, profiler: Profiler
) -> None:
    emit(provider, NEW)
    emit(provider, OLD)
    new, old = events_of(profiler)
    assert without_ids(new) == without_ids(old)
    assert new["gen_ai.usage.cache_read.input_tokens"] == 5
    assert new["gen_ai.provider.name"] == "openai" == old["gen_ai.provider.name"]
    assert new["gen_ai.server.time_to_first_token"] == pytest.approx(2.0)
    assert old["gen_ai.server.time_to_first_token"] == pytest.approx(2.0)


def test_without_prompt_attributes_the_fallback_names_the_call(
    provider: TracerProvider, profiler: Profiler
) -> None:
    emit(provider, NEW)
    event = event_of(profiler)
    assert event["promptprof.prompt.id"] == "unattributed"
    assert event["promptprof.prompt.version"] == "unknown"


def test_prompt_block_names_spans_started_inside(
    provider: TracerProvider, profiler: Profiler
) -> None:
    with prompt("faq", "v3", {"team": "search"}):
        emit(provider, NEW)
    event = event_of(profiler)
    assert event["promptprof.prompt.id"] == "faq"
    assert event["promptprof.prompt.version"] == "v3"
    assert event["promptprof.labels"] == {"team": "search"}


def test_prompt_block_names_the_current_span(
    provider: TracerProvider, profiler: Profiler
) -> None:
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("llm", attributes=NEW), prompt("faq", "v4"):
        pass
    assert event_of(profiler)["promptprof.prompt.version"] == "v4"


def test_configured_mapping(profiler: Profiler) -> None:
    mapping = GenAIMapping(prompt_id_attributes=("app.prompt",), version_attributes=("app.rev",))
    span = SpanData(0, 1_000_000, {**NEW, "app.prompt": "search", "app.rev": "7"})
    facts = facts_from_span(span, mapping)
    assert facts is not None
    assert (facts.spec.prompt_id, facts.spec.version) == ("search", "7")


def test_other_spans_are_counted_and_ignored(
    provider: TracerProvider, bridge: GenAISpanProcessor, profiler: Profiler
) -> None:
    emit(provider, {"http.method": "GET"})
    emit(provider, {**NEW, "gen_ai.operation.name": "invoke_agent"})
    emit(provider, NEW)
    assert len(events_of(profiler)) == 1
    assert (bridge.ignored_spans, bridge.converted_spans) == (2, 1)


def test_error_status_without_error_type(provider: TracerProvider, profiler: Profiler) -> None:
    emit(provider, NEW, error=True)
    assert event_of(profiler)["error.type"] == "_OTHER"


@pytest.mark.parametrize("written", [
    "RateLimitError", "openai.RateLimitError", "<class 'openai.RateLimitError'>",
])
def test_error_names_as_the_wrappers_record_them(written: str) -> None:
    assert error_name(written) == "RateLimitError"


def test_a_failing_conversion_never_reaches_the_host(
    provider: TracerProvider, profiler: Profiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(otel, "facts_from_span", broken)
    emit(provider, NEW)  # no exception
    assert profiler.internal_errors == 1


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from([*NEW, *OLD, "promptprof.prompt.id", "promptprof.label.x", "error.type"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
              st.lists(st.integers(), max_size=2)),
))
def test_any_attribute_values_convert_or_are_ignored(attributes: dict[str, Any]) -> None:
    span = SpanData(5, 10, {**NEW, **attributes}, (("exception", 7, {"exception.type": 3}),),
                    error=True)
    facts = facts_from_span(span, GenAIMapping())
    assert facts is None or facts.spec.prompt_id
