"""Cost for every call whose model genai-prices knows, with or without ``provider=``."""

from __future__ import annotations

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given
from hypothesis import strategies as st

from promptprof import Profiler
from promptprof._pricing import call_cost, known_provider
from promptprof._record import EventBuilder

MODELS = ("gpt-4o-mini", "claude-3-5-haiku-latest", "gpt-4o")


def _exact(model: str, provider: str | None, inp: int, out: int) -> float:
    usage = Usage(input_tokens=inp, output_tokens=out)
    return float(calc_price(usage, model_ref=model, provider_id=provider).total_price)


@given(
    model=st.sampled_from(MODELS),
    provider=st.sampled_from(["unknown", "", "my-gateway", "simulated"]),
    tokens=st.tuples(st.integers(0, 200_000), st.integers(0, 20_000)),
)
def test_a_provider_genai_prices_does_not_know_is_ignored(
    model: str, provider: str, tokens: tuple[int, int]
) -> None:
    cost = call_cost(provider, model, *tokens)
    assert cost == pytest.approx(_exact(model, None, *tokens), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("openai", "openai"),
        ("azure.ai.openai", "openai"),
        ("aws.bedrock", "aws"),
        ("unknown", None),
    ],
)
def test_known_providers_include_opentelemetry_names(provider: str, expected: str | None) -> None:
    assert known_provider(provider) == expected


def test_known_provider_narrows_the_lookup_and_unknown_models_cost_nothing() -> None:
    assert call_cost("openai", "gpt-4o-mini", 1000, 100) == pytest.approx(
        _exact("gpt-4o-mini", "openai", 1000, 100)
    )
    assert call_cost("openai", "claude-3-5-haiku-latest", 1000, 100) is None
    assert call_cost("unknown", "my-private-model", 1000, 100) is None


def test_track_without_provider_sends_the_cost() -> None:
    """The default ``track()`` (provider "unknown") gets the cost of its model."""
    profiler = Profiler()
    profiler.enqueue = lambda item: None  # type: ignore[method-assign]  # keep the call here
    with profiler.track("summarize", "v1", model="gpt-4o-mini") as call:
        call.set_usage(1000, 100)
    event = EventBuilder("svc", "test", False, None).build(call)
    assert event["gen_ai.provider.name"] == "unknown"
    assert event["promptprof.cost.usd"] == pytest.approx(_exact("gpt-4o-mini", None, 1000, 100))
