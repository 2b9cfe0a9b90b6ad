"""Real instrumentations of the OpenAI client emit spans that the in-process bridge
(``GenAISpanProcessor``) and the OTLP receiver (through the real OTLP/HTTP exporter) turn into
the events ``wrap_openai`` records for the same requests (streams and errors included)."""

from __future__ import annotations

from typing import Any

import openai
from integrations.conftest import event_of

from promptprof.testing._fake_providers import FakeReply

from .conftest import Pair
from .same_call import UNKNOWN_FROM_SPANS, assert_same_call

ESTIMATED_FROM_STREAMED_TEXT = (
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "promptprof.tokens.estimated",
    "promptprof.cost.usd",
)
"""A stream failing midway has no usage: the wrapper counts tokens from the text it saw
streamed, which no span carries."""
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    """A chat completion of the test prompt."""
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)


def stream(client: openai.OpenAI) -> Any:
    """A streamed chat completion that asks for usage in the last chunk."""
    return chat(client, stream=True, stream_options={"include_usage": True})


def bridged(
    pair: Pair, request: Any, reply: FakeReply | None = None, unknown: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The bridge's event for ``request``, checked against the wrapper's (but ``unknown``), and
    the receiver's, equal to the bridge's but for the event id."""
    traced = pair.traced
    reference = pair.run(request, reply)
    event = event_of(traced.profiler)
    unknown += UNKNOWN_FROM_SPANS[traced.name]
    assert_same_call(reference, event, pair.window, unknown)
    assert traced.profiler.internal_errors == 0
    received = event_of(traced.received.profiler)
    assert received.pop("event_id") != event["event_id"]
    assert received == {k: v for k, v in event.items() if k != "event_id"}
    return event


def test_completion(pair: Pair) -> None:
    event = bridged(pair, chat, FakeReply(model="gpt-4o-mini-2024-07-18"))
    assert event["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert event["gen_ai.usage.input_tokens"] == 25
    assert event["promptprof.cost.usd"] > 0


def test_completion_with_cached_tokens(pair: Pair) -> None:
    reply = FakeReply(cached_tokens=5)
    if pair.traced.name == "official":  # no cached tokens on its spans: the cost differs
        pair.run(chat, reply)
        assert "gen_ai.usage.cache_read.input_tokens" not in event_of(pair.traced.profiler)
        return
    assert bridged(pair, chat, reply)["gen_ai.usage.cache_read.input_tokens"] == 5


def test_stream_with_usage(pair: Pair) -> None:
    event = bridged(pair, stream)
    assert event["gen_ai.usage.output_tokens"] == 9
    if pair.traced.name == "openllmetry":
        assert event["gen_ai.server.time_to_first_token"] > 0


def test_error_status(pair: Pair) -> None:
    event = bridged(pair, chat, FakeReply(status=429))
    assert event["error.type"] == "RateLimitError"
    assert event["promptprof.status"] == "error"


def test_stream_failing_midway(pair: Pair) -> None:
    reply = FakeReply(stream_error_after=2)
    if pair.traced.name == "openllmetry":
        # OpenLLMetry 0.62.4 ends the span of a stream that failed midway as a success
        unknown = (*ESTIMATED_FROM_STREAMED_TEXT, "promptprof.status", "error.type")
        assert bridged(pair, stream, reply, unknown)["promptprof.status"] == "ok"
        return
    event = bridged(pair, stream, reply, ESTIMATED_FROM_STREAMED_TEXT)
    assert event["error.type"] == "APIError"
