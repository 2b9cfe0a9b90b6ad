"""The LangChain callback handler (with ``ChatOpenAI``) and the LiteLLM callback (with
``litellm.completion``) against the fake provider record the events ``wrap_openai`` records
for the same requests: completions, cached tokens, streams with usage and TTFT, errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import litellm
import openai
import pytest
from integrations.conftest import event_of, events_of, recording_profiler
from langchain_openai import ChatOpenAI

from promptprof import Profiler
from promptprof.integrations import wrap_openai
from promptprof.integrations.langchain import PromptprofCallbackHandler
from promptprof.integrations.litellm import PromptprofLogger
from promptprof.testing._fake_providers import FakeProviderServer, FakeReply

from .same_call import assert_same_call

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = {"prompt_id": "faq", "version": "v1", "labels": {"team": "search"}}


@pytest.fixture
def profilers() -> Iterator[tuple[Profiler, Profiler]]:
    """The wrapper's profiler (reference) and the callback's."""
    made = (recording_profiler(), recording_profiler())
    yield made
    for profiler in made:
        profiler.close(1)


def reference(
    server: FakeProviderServer, profiler: Profiler, reply: FakeReply, stream: bool
) -> dict[str, Any]:
    """The event ``wrap_openai`` records for the request, answered with ``reply``."""
    client = wrap_openai(
        openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0),
        prompt_id="faq", version="v1", labels={"team": "search"}, profiler=profiler,
    )
    server.script(reply)
    options: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} \
        if stream else {}
    try:
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                **options)
        if stream:
            list(result)
    except openai.APIError:
        pass
    client.close()
    return event_of(profiler)


def timed(call: Callable[[], Any]) -> tuple[int, int]:
    """Run ``call`` (a provider error is part of the outcome); the ns window around it."""
    before = time.time_ns()
    with contextlib.suppress(openai.APIError, litellm.exceptions.APIError):
        call()
    return before, time.time_ns()


def awaited_event(profiler: Profiler, timeout: float = 10.0) -> dict[str, Any]:
    """The single event of ``profiler``, once a callback on another thread recorded it."""
    deadline = time.monotonic() + timeout
    while not events_of(profiler) and time.monotonic() < deadline:
        time.sleep(0.01)
    return event_of(profiler)


CASES = [
    pytest.param(FakeReply(model="gpt-4o-mini-2024-07-18", cached_tokens=5), False,
                 id="completion"),
    pytest.param(FakeReply(), True, id="stream"),
    pytest.param(FakeReply(status=429), False, id="error"),
]


@pytest.mark.parametrize(("reply", "stream"), CASES)
def test_langchain_chat_openai(
    server: FakeProviderServer, profilers: tuple[Profiler, Profiler], reply: FakeReply,
    stream: bool,
) -> None:
    wrapper, profiler = profilers
    expected = reference(server, wrapper, reply, stream)
    handler = PromptprofCallbackHandler("faq", "v1", {"team": "search"}, profiler=profiler)
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=server.openai_base_url, api_key="test",
                     max_retries=0, callbacks=[handler], stream_usage=True)
    server.script(reply)
    window = timed(lambda: list(llm.stream(MESSAGES)) if stream else llm.invoke(MESSAGES))
    event = event_of(profiler)
    assert_same_call(expected, event, window)
    if stream:
        assert event["gen_ai.server.time_to_first_token"] > 0
    assert profiler.internal_errors == 0


@pytest.fixture(scope="module")
def litellm_logger() -> Iterator[PromptprofLogger]:
    """One logger for the module: LiteLLM copies its callbacks into lists of its own on the
    first call and skips a later instance of the same class."""
    logger = PromptprofLogger()
    litellm.callbacks = [logger]
    yield logger
    litellm.callbacks = []


@pytest.mark.parametrize(("reply", "stream"), CASES)
def test_litellm_completion(
    server: FakeProviderServer, profilers: tuple[Profiler, Profiler], reply: FakeReply,
    stream: bool, litellm_logger: PromptprofLogger,
) -> None:
    wrapper, profiler = profilers
    expected = reference(server, wrapper, reply, stream)
    litellm_logger.profiler = profiler
    options: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} \
        if stream else {}

    def call() -> None:
        result = litellm.completion(
            model="openai/gpt-4o-mini", api_base=server.openai_base_url, api_key="test",
            messages=MESSAGES, num_retries=0, metadata={"promptprof": PROMPT}, **options,
        )
        if stream:
            list(result)

    server.script(reply)
    started, _ = timed(call)
    event = awaited_event(profiler)
    # LiteLLM reads a stream's end on its logging thread, which may run after the caller's
    # last chunk: the call must end before its event was seen
    assert_same_call(expected, event, (started, time.time_ns()))
    assert profiler.internal_errors == 0


async def test_litellm_async_completion(
    server: FakeProviderServer, profilers: tuple[Profiler, Profiler],
    litellm_logger: PromptprofLogger,
) -> None:
    wrapper, profiler = profilers
    reply = FakeReply(model="gpt-4o-mini-2024-07-18", cached_tokens=5)
    expected = reference(server, wrapper, reply, False)
    litellm_logger.profiler = profiler
    server.script(reply)
    before = time.time_ns()
    await litellm.acompletion(
        model="openai/gpt-4o-mini", api_base=server.openai_base_url, api_key="test",
        messages=MESSAGES, num_retries=0, metadata={"promptprof": PROMPT},
    )
    window = (before, time.time_ns())
    deadline = time.monotonic() + 10
    while not events_of(profiler) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # LiteLLM logs from a task of this loop
    assert_same_call(expected, event_of(profiler), window)
