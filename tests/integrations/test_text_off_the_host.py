"""Text for token estimates is never joined or tokenized on the host's thread: the wrappers keep
references to the strings (bounded, counted against ``max_bytes_held``) and the sender's thread
does the rest."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptprof import Profiler, load_settings
from promptprof._record import TEXT_KEEP_CHARS, TextParts
from promptprof._tokens import CHARS_PER_TOKEN, estimate_tokens
from promptprof.integrations._common import texts_of
from promptprof.testing._fake_providers import FakeProviderServer, FakeReply
from promptprof_tools.stack import free_port

from .conftest import RecordingProfiler, drain, event_of, invoke

MODEL = "gpt-4o-mini"


@pytest.fixture
def text_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that joined a :class:`TextParts` or estimated tokens."""
    seen: list[str] = []
    join, estimate = TextParts.text, estimate_tokens

    def spying_join(self: TextParts) -> str:
        seen.append(threading.current_thread().name)
        return join(self)

    def spying_estimate(text: str, model: str = "") -> int:
        seen.append(threading.current_thread().name)
        return estimate(text, model)

    monkeypatch.setattr(TextParts, "text", spying_join)
    monkeypatch.setattr("promptprof._record.estimate_tokens", spying_estimate)
    return seen


async def test_a_stream_without_usage_has_its_text_joined_and_estimated_off_the_host_thread(
    openai_client: Any, profiler: RecordingProfiler, text_threads: list[str],
) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    stream = await invoke(openai_client.chat.completions.create, model=MODEL,
                          messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in await drain(stream) if c.choices)
    event = event_of(profiler)
    assert event["promptprof.tokens.estimated"] is True
    assert event["gen_ai.usage.input_tokens"] == estimate_tokens(str(messages[0]["content"]), MODEL)
    assert event["gen_ai.usage.output_tokens"] == estimate_tokens(text, MODEL)
    host = threading.current_thread().name
    assert text_threads and host not in text_threads


async def test_a_completion_without_usage_is_estimated_off_the_host_thread(
    openai_client: Any, server: FakeProviderServer, profiler: RecordingProfiler,
    text_threads: list[str],
) -> None:
    server.script(FakeReply(usage=False))
    await invoke(openai_client.chat.completions.create, model=MODEL,
                 messages=[{"role": "user", "content": "hi"}])
    assert event_of(profiler)["promptprof.tokens.estimated"] is True
    assert text_threads and threading.current_thread().name not in text_threads


def _old_text_of(value: Any) -> str:
    """The joined text the wrappers built on the host's thread before (the reference)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [_old_text_of(item) for item in value]
    elif isinstance(value, dict):
        parts = [_old_text_of(value.get(key)) for key in ("text", "content")]
    else:
        return ""
    return "\n".join(part for part in parts if part)


CONTENT = st.recursive(
    st.text(max_size=20) | st.none(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["text", "content", "role"]), inner, max_size=3),
    max_leaves=20,
)


@given(CONTENT, CONTENT)
def test_texts_of_joins_to_the_same_text_as_joining_on_the_host(first: Any, second: Any) -> None:
    expected = "\n".join(t for t in (_old_text_of(first), _old_text_of(second)) if t)
    assert texts_of(first, second).text() == expected


def test_changing_the_messages_after_the_call_changes_nothing() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": "first"}]}]
    parts = texts_of(messages)
    messages[0]["content"][0]["text"] = "changed"
    messages.append({"role": "assistant", "content": "later"})
    assert parts.text() == "first"


def test_a_long_stream_keeps_a_bounded_text_and_scales_its_estimate() -> None:
    parts = TextParts()
    chunk = "abcd" * 256  # 1 KiB
    for _ in range(1024):  # 1 MiB streamed
        parts.add(chunk)
    assert parts.chars == 1024 * len(chunk)
    assert parts.kept_chars == TEXT_KEEP_CHARS == len(parts.text())
    assert parts.nbytes < TEXT_KEEP_CHARS + 64 * 1024  # strings, their headers and slots
    assert parts.tokens("") == parts.chars // CHARS_PER_TOKEN  # no tiktoken model: by chars


def test_a_single_huge_string_is_cut_to_the_bound() -> None:
    parts = TextParts()
    parts.add("x" * (TEXT_KEEP_CHARS + 10))
    parts.add("y")
    assert (parts.chars, parts.kept_chars) == (TEXT_KEEP_CHARS + 11, TEXT_KEEP_CHARS)
    assert parts.text() == "x" * TEXT_KEEP_CHARS


def test_queued_texts_count_against_max_bytes_held_and_refusals_are_counted() -> None:
    limit = 2 * 1024 * 1024
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_ms": 1000},
        producer={"max_bytes_held": limit, "metrics_log_interval_s": 0},
    )
    profiler = Profiler(settings)  # Kafka unreachable: everything stays queued
    try:
        for _ in range(20):
            with profiler.track("long-stream", "v1", model=MODEL) as call:
                call.response_text = TextParts()
                for _ in range(300):
                    call.response_text.add("z" * 1024)  # each call keeps 256 KiB
        stats = profiler.stats()
        assert stats["bytes_held"] <= limit
        assert stats["dropped_bytes_limit"] >= 20 - limit // (TEXT_KEEP_CHARS + 1)
    finally:
        profiler.close(0.1)
