"""The OpenAI wrapper against a local server speaking the OpenAI wire format (sync and async)."""

from __future__ import annotations

import gc
import inspect
from types import SimpleNamespace
from typing import Any, cast

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from pydantic import BaseModel

from promptprof._event import CallEvent
from promptprof._pricing import call_cost
from promptprof._tokens import estimate_tokens
from promptprof.integrations import use_prompt, wrap_openai
from promptprof.integrations._openai import ChatCompletionsApi
from promptprof.testing._fake_providers import (
    DEFAULT_TEXT,
    FakeProviderServer,
    FakeReply,
    split_text,
)

from .conftest import (
    RecordingProfiler,
    close,
    drain,
    event_of,
    events_of,
    invoke,
    queued,
    recording_profiler,
)

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
]
PROMPT_TEXT = "Answer in one sentence.\nWhat is the capital of France?"


def chat(client: Any, **kwargs: Any) -> Any:
    """``chat.completions.create`` with the test's model and messages."""
    return invoke(client.chat.completions.create, model=MODEL, messages=MESSAGES, **kwargs)


def valid(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` after checking it against the call-event contract."""
    CallEvent.model_validate(event)
    return event


def assert_ttft(event: dict[str, Any]) -> None:
    ttft = event["gen_ai.server.time_to_first_token"]
    assert 0 < ttft <= event["promptprof.latency_ms"]


async def test_wrap_returns_the_same_client(openai_client: Any) -> None:
    assert isinstance(openai_client, openai.OpenAI | openai.AsyncOpenAI)
    again = wrap_openai(openai_client, prompt_id="faq", version="v1")
    assert again is openai_client


async def test_completion_records_usage_model_and_cost(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(model="gpt-4o-mini-2024-07-18", cached_tokens=5))
    completion = await chat(openai_client)
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == DEFAULT_TEXT
    event = valid(event_of(profiler))
    assert event["promptprof.prompt.id"] == "faq"
    assert event["promptprof.prompt.version"] == "v1"
    assert event["promptprof.labels"] == {"team": "search"}
    assert event["gen_ai.provider.name"] == "openai"
    assert event["gen_ai.request.model"] == MODEL
    assert event["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert event["promptprof.status"] == "ok"
    assert event["gen_ai.usage.input_tokens"] == 25
    assert event["gen_ai.usage.output_tokens"] == 9
    assert event["gen_ai.usage.cache_read.input_tokens"] == 5
    assert event["promptprof.tokens.estimated"] is False
    expected = call_cost("openai", "gpt-4o-mini-2024-07-18", 25, 9, 5)
    assert expected is not None
    assert event["promptprof.cost.usd"] == pytest.approx(expected)
    assert "gen_ai.server.time_to_first_token" not in event
    assert "gen_ai.output.messages" not in event
    assert "gen_ai.input.messages" not in event
    assert profiler.internal_errors == 0


async def test_completion_without_usage_is_estimated(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(usage=False))
    await chat(openai_client)
    event = valid(event_of(profiler))
    assert event["promptprof.tokens.estimated"] is True
    assert event["gen_ai.usage.input_tokens"] == estimate_tokens(PROMPT_TEXT, MODEL)
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(DEFAULT_TEXT, MODEL)
    assert event["promptprof.cost.usd"] is not None
    assert "gen_ai.output.messages" not in event


async def test_stream_with_usage_forwards_chunks_and_reads_the_last_one(
    openai_client: Any, profiler: RecordingProfiler
) -> None:
    stream = await chat(openai_client, stream=True, stream_options={"include_usage": True})
    chunks = await drain(stream)
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 25
    event = valid(event_of(profiler))
    assert event["gen_ai.usage.input_tokens"] == 25
    assert event["gen_ai.usage.output_tokens"] == 9
    assert event["promptprof.tokens.estimated"] is False
    assert event["promptprof.cost.usd"] is not None
    assert_ttft(event)
    assert "gen_ai.output.messages" not in event


async def test_stream_without_usage_is_estimated_from_the_text(
    openai_client: Any, profiler: RecordingProfiler
) -> None:
    stream = await chat(openai_client, stream=True)
    await drain(stream)
    event = valid(event_of(profiler))
    assert event["promptprof.tokens.estimated"] is True
    assert event["gen_ai.usage.input_tokens"] == estimate_tokens(PROMPT_TEXT, MODEL)
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(DEFAULT_TEXT, MODEL)
    assert_ttft(event)


async def test_stream_closed_early_finishes_the_call(
    openai_client: Any, profiler: RecordingProfiler
) -> None:
    stream = await chat(openai_client, stream=True)
    first = await anext(stream) if hasattr(stream, "__anext__") else next(stream)
    assert isinstance(first, ChatCompletionChunk)
    assert queued(profiler) == 0  # still streaming
    await close(stream)
    event = valid(event_of(profiler))
    assert event["promptprof.status"] == "ok"
    await close(stream)  # closing twice records nothing more
    assert queued(profiler) == 1


async def test_stream_dropped_unread_finishes_the_call(
    openai_client: Any, profiler: RecordingProfiler, mode: str
) -> None:
    stream = await chat(openai_client, stream=True)
    response = stream.response  # what the SDK's own stream would leave open
    if mode == "async":
        await response.aclose()
    else:
        response.close()
    del stream
    gc.collect()
    assert valid(event_of(profiler))["promptprof.status"] == "ok"


async def test_stream_used_as_context_manager(
    openai_client: Any, profiler: RecordingProfiler, mode: str
) -> None:
    stream = await chat(openai_client, stream=True, stream_options={"include_usage": True})
    if mode == "sync":
        with stream as entered:
            assert entered is stream
            chunks = list(entered)
    else:
        async with stream as entered:
            chunks = [chunk async for chunk in entered]
    assert chunks and stream.response.status_code == 200  # attributes are delegated
    event = valid(event_of(profiler))
    assert event["gen_ai.usage.output_tokens"] == 9
    assert_ttft(event)


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, openai.RateLimitError), (500, openai.InternalServerError),
     (400, openai.BadRequestError)],
)
async def test_error_status_is_recorded_and_reraised(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler,
    status: int, error: type[Exception],
) -> None:
    server.script(FakeReply(status=status))
    with pytest.raises(error) as info:
        await chat(openai_client)
    assert cast(openai.APIStatusError, info.value).status_code == status
    event = valid(event_of(profiler))
    assert event["promptprof.status"] == "error"
    assert event["error.type"] == error.__name__
    assert "gen_ai.usage.input_tokens" not in event  # nothing was answered
    assert "gen_ai.server.time_to_first_token" not in event


async def test_timeout_is_recorded_and_reraised(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(delay_s=1.0))
    with pytest.raises(openai.APITimeoutError):
        await chat(openai_client, timeout=0.1)
    assert valid(event_of(profiler))["error.type"] == "APITimeoutError"


async def test_error_in_the_middle_of_a_stream(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(stream_error_after=2))
    stream = await chat(openai_client, stream=True)
    with pytest.raises(openai.APIError, match="simulated failure"):
        await drain(stream)
    event = valid(event_of(profiler))
    assert event["error.type"] == "APIError"
    assert_ttft(event)
    partial = "".join(split_text(DEFAULT_TEXT)[:2])  # the chunks before the error
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(partial, MODEL)
    assert event["promptprof.tokens.estimated"] is True


@pytest.mark.parametrize("is_async", [False, True])
async def test_the_same_exception_object_is_reraised(
    profiler: RecordingProfiler, is_async: bool
) -> None:
    class Boom(Exception):
        pass

    boom = Boom("provider exploded")

    def create(**kwargs: Any) -> Any:
        raise boom

    async def acreate(**kwargs: Any) -> Any:
        raise boom

    fake = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(
        create=acreate if is_async else create
    )))
    client = wrap_openai(cast(Any, fake), prompt_id="faq", version="v1", profiler=profiler)
    with pytest.raises(Boom) as info:
        await invoke(client.chat.completions.create, model=MODEL, messages=MESSAGES)
    assert info.value is boom
    assert inspect.iscoroutinefunction(client.chat.completions.create) is is_async
    assert event_of(profiler)["error.type"] == "Boom"


async def test_prompt_override_per_call_is_removed_from_the_request(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    await chat(openai_client, promptprof={"prompt_id": "faq-short", "version": "v9",
                                          "labels": {"variant": "b"}})
    event = valid(event_of(profiler))
    assert (event["promptprof.prompt.id"], event["promptprof.prompt.version"]) == (
        "faq-short", "v9"
    )
    assert event["promptprof.labels"] == {"team": "search", "variant": "b"}
    assert "promptprof" not in server.requests[-1].body
    assert server.requests[-1].body["model"] == MODEL


async def test_use_prompt_overrides_inside_the_block(
    openai_client: Any, profiler: RecordingProfiler
) -> None:
    with use_prompt(version="v2"):
        await chat(openai_client)
        with use_prompt(prompt_id="faq-nested", labels={"variant": "c"}):
            await chat(openai_client)
            await chat(openai_client, promptprof={"version": "v3"})
    await chat(openai_client)
    identities = [
        (e["promptprof.prompt.id"], e["promptprof.prompt.version"], e["promptprof.labels"])
        for e in events_of(profiler)
    ]
    labelled = {"team": "search", "variant": "c"}
    assert identities == [
        ("faq", "v2", {"team": "search"}),
        ("faq-nested", "v2", labelled),
        ("faq-nested", "v3", labelled),
        ("faq", "v1", {"team": "search"}),
    ]


def test_use_prompt_rejects_empty_names() -> None:
    with pytest.raises(ValueError, match="non-empty"), use_prompt(version=""):
        pass


async def test_invalid_override_skips_profiling_without_raising(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    completion = await chat(openai_client, promptprof={"prompt": "typo"})
    assert isinstance(completion, ChatCompletion)
    assert queued(profiler) == 0
    assert profiler.internal_errors == 1
    assert "promptprof" not in server.requests[-1].body


async def test_internal_failures_never_reach_the_caller(
    openai_client: Any, profiler: RecordingProfiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("promptprof bug")

    monkeypatch.setattr(ChatCompletionsApi, "read_response", broken)
    monkeypatch.setattr(ChatCompletionsApi, "read_chunk", broken)
    completion = await chat(openai_client)
    assert completion.choices[0].message.content == DEFAULT_TEXT
    chunks = await drain(await chat(openai_client, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert queued(profiler) == 2  # both calls still measured
    assert profiler.internal_errors == 1 + len(chunks)


async def test_capture_text_offers_prompt_and_response(
    server: FakeProviderServer, mode: str
) -> None:
    profiler = recording_profiler(capture_text=True)
    cls = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
    client = wrap_openai(
        cls(base_url=server.openai_base_url, api_key="test", max_retries=0),
        prompt_id="faq", version="v1", profiler=profiler,
    )
    await chat(client)
    await drain(await chat(client, stream=True, stream_options={"include_usage": True}))
    for event in events_of(profiler):
        assert event["gen_ai.input.messages"] == PROMPT_TEXT
        assert event["gen_ai.output.messages"] == DEFAULT_TEXT
        assert event["promptprof.tokens.estimated"] is False


async def test_disabled_profiler_passes_calls_through(
    server: FakeProviderServer, mode: str
) -> None:
    profiler = recording_profiler(enabled=False)
    cls = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
    client = wrap_openai(
        cls(base_url=server.openai_base_url, api_key="test", max_retries=0),
        prompt_id="faq", version="v1", profiler=profiler,
    )
    stream = await chat(client, stream=True, promptprof={"version": "v2"})
    assert isinstance(stream, openai.Stream | openai.AsyncStream)  # not even proxied
    await drain(stream)
    assert queued(profiler) == 0
    assert "promptprof" not in server.requests[-1].body


async def test_copies_and_rewraps_stay_profiled(
    openai_client: Any, profiler: RecordingProfiler
) -> None:
    await chat(openai_client.with_options(timeout=30))
    await chat(openai_client.copy(max_retries=0))
    wrap_openai(openai_client, prompt_id="faq-2", version="v1", profiler=profiler)
    await chat(openai_client)
    ids = [e["promptprof.prompt.id"] for e in events_of(profiler)]
    assert ids == ["faq", "faq", "faq-2"]  # re-wrapping replaces, never stacks


async def test_responses_api(openai_client: Any, profiler: RecordingProfiler) -> None:
    response = await invoke(openai_client.responses.create, model=MODEL,
                            instructions="Be brief.", input="Capital of France?")
    assert isinstance(response, Response)
    assert response.output_text == DEFAULT_TEXT
    stream = await invoke(openai_client.responses.create, model=MODEL, input="Capital?",
                          stream=True)
    events = await drain(stream)
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    plain, streamed = (valid(e) for e in events_of(profiler))
    for event in (plain, streamed):
        assert event["gen_ai.usage.input_tokens"] == 25
        assert event["gen_ai.usage.output_tokens"] == 9
        assert event["promptprof.tokens.estimated"] is False
        assert event["promptprof.cost.usd"] is not None
    assert "gen_ai.server.time_to_first_token" not in plain
    assert_ttft(streamed)


async def test_responses_stream_error_event(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(stream_error_after=1))
    stream = await invoke(openai_client.responses.create, model=MODEL, input="x", stream=True)
    await drain(stream)
    event = valid(event_of(profiler))
    assert event["error.type"] == "server_error"
    assert event["promptprof.tokens.estimated"] is True


class Answer(BaseModel):
    city: str


async def test_parse_is_profiled(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler
) -> None:
    server.script(FakeReply(text='{"city": "Paris"}'))
    completion = await invoke(openai_client.chat.completions.parse, model=MODEL,
                              messages=MESSAGES, response_format=Answer)
    assert completion.choices[0].message.parsed == Answer(city="Paris")
    event = valid(event_of(profiler))
    assert event["gen_ai.usage.output_tokens"] == 9
