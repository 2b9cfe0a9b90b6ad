"""The Anthropic wrapper against a local server speaking the Anthropic wire format."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import BaseModel

from promptprof._event import CallEvent
from promptprof._pricing import call_cost
from promptprof._tokens import estimate_tokens
from promptprof.integrations._anthropic import MessagesApi
from promptprof.testing._fake_providers import (
    DEFAULT_TEXT,
    FakeProviderServer,
    FakeReply,
    split_text,
)

from .conftest import RecordingProfiler, drain, event_of, events_of, invoke, queued

MODEL = "claude-3-5-haiku-latest"
SYSTEM = "Answer in one sentence."
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT_TEXT = "Answer in one sentence.\nWhat is the capital of France?"


def create(client: Any, **kwargs: Any) -> Any:
    """``messages.create`` with the test's model, system prompt and messages."""
    return invoke(client.messages.create, model=MODEL, max_tokens=64, system=SYSTEM,
                  messages=MESSAGES, **kwargs)


def stream_manager(client: Any, **kwargs: Any) -> Any:
    """``messages.stream(...)``: a (sync or async) context manager."""
    return client.messages.stream(model=MODEL, max_tokens=64, system=SYSTEM,
                                  messages=MESSAGES, **kwargs)


def valid(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` after checking it against the call-event contract."""
    CallEvent.model_validate(event)
    return event


def assert_usage(event: dict[str, Any], inp: int = 25, out: int = 9, cached: int = 0) -> None:
    assert event["gen_ai.usage.input_tokens"] == inp
    assert event["gen_ai.usage.output_tokens"] == out
    assert event["gen_ai.usage.cache_read.input_tokens"] == cached
    assert event["promptprof.tokens.estimated"] is False
    assert event["promptprof.cost.usd"] == pytest.approx(
        call_cost("anthropic", MODEL, inp, out, cached)
    )
    assert event["promptprof.cost.usd"] is not None


def assert_ttft(event: dict[str, Any]) -> None:
    ttft = event["gen_ai.server.time_to_first_token"]
    assert 0 < ttft <= event["promptprof.latency_ms"]


async def test_wrap_returns_the_same_client(anthropic_client: Any) -> None:
    assert isinstance(anthropic_client, anthropic.Anthropic | anthropic.AsyncAnthropic)


async def test_message_counts_cached_tokens_as_input(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(input_tokens=30, cached_tokens=10))
    message = await create(anthropic_client)
    assert isinstance(message, Message)
    assert message.usage.input_tokens == 20  # Anthropic leaves the cache reads out
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    event = valid(event_of(profiler))
    assert (event["promptprof.prompt.id"], event["promptprof.prompt.version"]) == (
        "support", "v1"
    )
    assert event["gen_ai.provider.name"] == "anthropic"
    assert event["gen_ai.request.model"] == MODEL
    assert event["gen_ai.response.model"] == MODEL
    assert_usage(event, inp=30, cached=10)
    assert "gen_ai.server.time_to_first_token" not in event
    assert "gen_ai.output.messages" not in event


async def test_message_without_usage_is_estimated(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(usage=False))
    await create(anthropic_client)
    event = valid(event_of(profiler))
    assert event["promptprof.tokens.estimated"] is True
    assert event["gen_ai.usage.input_tokens"] == estimate_tokens(PROMPT_TEXT, MODEL)
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(DEFAULT_TEXT, MODEL)
    assert event["promptprof.cost.usd"] is not None


async def test_raw_event_stream(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(input_tokens=40, cached_tokens=15))
    events: list[RawMessageStreamEvent] = await drain(await create(anthropic_client, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    text = "".join(
        e.delta.text for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == DEFAULT_TEXT
    event = valid(event_of(profiler))
    assert_usage(event, inp=40, cached=15)
    assert_ttft(event)


async def test_stream_cut_short_estimates_the_output(
    anthropic_client: Any, profiler: RecordingProfiler
) -> None:
    stream = await create(anthropic_client, stream=True)
    if hasattr(stream, "__anext__"):
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()
    else:
        for event in stream:
            if event.type == "content_block_delta":
                break
        stream.close()
    event = valid(event_of(profiler))
    assert event["promptprof.status"] == "ok"
    assert event["gen_ai.usage.input_tokens"] == 25  # from message_start
    first_chunk = split_text(DEFAULT_TEXT)[0]
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(first_chunk, MODEL)
    assert event["promptprof.tokens.estimated"] is True
    assert_ttft(event)


async def test_stream_helper_context_manager(
    anthropic_client: Any, profiler: RecordingProfiler, mode: str
) -> None:
    if mode == "sync":
        with stream_manager(anthropic_client) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    else:
        async with stream_manager(anthropic_client) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert final.usage.output_tokens == 9
    event = valid(event_of(profiler))
    assert_usage(event)
    assert_ttft(event)


async def test_stream_helper_left_unread(
    anthropic_client: Any, profiler: RecordingProfiler, mode: str
) -> None:
    if mode == "sync":
        with stream_manager(anthropic_client):
            pass
    else:
        async with stream_manager(anthropic_client):
            pass
    event = valid(event_of(profiler))
    assert event["promptprof.status"] == "ok"
    assert "gen_ai.server.time_to_first_token" not in event


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, anthropic.RateLimitError), (529, anthropic.OverloadedError),
     (401, anthropic.AuthenticationError)],
)
async def test_error_status_is_recorded_and_reraised(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler,
    status: int, error: type[Exception],
) -> None:
    server.script(FakeReply(status=status))
    with pytest.raises(error):
        await create(anthropic_client)
    event = valid(event_of(profiler))
    assert event["promptprof.status"] == "error"
    assert event["error.type"] == error.__name__
    assert "gen_ai.usage.input_tokens" not in event


async def test_error_when_entering_the_stream_helper(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler, mode: str
) -> None:
    server.script(FakeReply(status=429))
    with pytest.raises(anthropic.RateLimitError):
        if mode == "sync":
            with stream_manager(anthropic_client):
                pass
        else:
            async with stream_manager(anthropic_client):
                pass
    assert valid(event_of(profiler))["error.type"] == "RateLimitError"


async def test_error_event_in_the_middle_of_a_stream(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(stream_error_after=3))
    with pytest.raises(anthropic.APIStatusError) as info:
        await drain(await create(anthropic_client, stream=True))
    event = valid(event_of(profiler))
    assert event["error.type"] == type(info.value).__name__
    assert event["gen_ai.usage.input_tokens"] == 25
    partial = "".join(split_text(DEFAULT_TEXT)[:3])
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(partial, MODEL)
    assert_ttft(event)


async def test_prompt_override_per_call(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler, mode: str
) -> None:
    await create(anthropic_client, promptprof={"version": "v2"})
    manager = stream_manager(anthropic_client, promptprof={"prompt_id": "support-short"})
    if mode == "sync":
        with manager as stream:
            stream.until_done()
    else:
        async with manager as stream:
            await stream.until_done()
    versions = [
        (e["promptprof.prompt.id"], e["promptprof.prompt.version"]) for e in events_of(profiler)
    ]
    assert versions == [("support", "v2"), ("support-short", "v1")]
    assert all("promptprof" not in request.body for request in server.requests)


async def test_internal_failures_never_reach_the_caller(
    anthropic_client: Any, profiler: RecordingProfiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("promptprof bug")

    monkeypatch.setattr(MessagesApi, "read_response", broken)
    monkeypatch.setattr(MessagesApi, "read_chunk", broken)
    message = await create(anthropic_client)
    assert message.content[0].text == DEFAULT_TEXT
    events = await drain(await create(anthropic_client, stream=True))
    assert events[-1].type == "message_stop"
    assert queued(profiler) == 2
    assert profiler.internal_errors == 1 + len(events)


class Answer(BaseModel):
    city: str


async def test_parse_is_profiled(
    anthropic_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(text='{"city": "Paris"}'))
    message = await invoke(anthropic_client.messages.parse, model=MODEL, max_tokens=64,
                           messages=MESSAGES, output_format=Answer)
    assert message.parsed_output == Answer(city="Paris")
    assert_usage(valid(event_of(profiler)))
