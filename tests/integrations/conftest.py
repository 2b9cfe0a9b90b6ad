"""Fixtures for the client wrappers: the fake provider server, a recording profiler, clients.

Every client fixture is parametrized over the sync and the async client, so each test runs
twice; :func:`invoke` and :func:`drain` hide the difference (awaiting when needed).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from promptprof.config import ProducerSettings, Settings
from promptprof.integrations import wrap_anthropic, wrap_openai
from promptprof.profiler import Profiler
from promptprof.record import EventBuilder
from promptprof.testing.fake_providers import FakeProviderServer


class RecordingProfiler(Profiler):
    """A profiler that keeps what it is handed (no sender, no Kafka)."""

    def __init__(self, *, capture_text: bool = False, enabled: bool = True) -> None:
        producer = ProducerSettings(
            capture_text=capture_text, enabled=enabled, service_name="tests", compression="none"
        )
        super().__init__(Settings(producer=producer))
        self.items: list[Any] = []

    def enqueue(self, item: Any) -> None:
        """Keep ``item``."""
        self.items.append(item)

    def events(self) -> list[dict[str, Any]]:
        """The call events the sender would publish for the recorded items."""
        producer = self.settings.producer
        builder = EventBuilder(
            producer.service_name, producer.environment, producer.capture_text, self.redact
        )
        return [builder.build(item) for item in self.items]

    def event(self) -> dict[str, Any]:
        """The single recorded event."""
        events = self.events()
        assert len(events) == 1, events
        return events[0]


async def invoke(method: Any, **kwargs: Any) -> Any:
    """Call a (sync or async) client method."""
    result = method(**kwargs)
    return await result if inspect.isawaitable(result) else result


async def drain(stream: Any) -> list[Any]:
    """Every chunk of a sync or async stream."""
    if hasattr(stream, "__aiter__"):
        return [chunk async for chunk in stream]
    return list(stream)


async def close(stream: Any) -> None:
    """Close a sync or async stream."""
    result = stream.close()
    if inspect.isawaitable(result):
        await result




@pytest.fixture
def profiler() -> RecordingProfiler:
    """A fresh recording profiler."""
    return RecordingProfiler()


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Which client flavour a test runs with."""
    return str(request.param)


@pytest.fixture
async def openai_client(
    server: FakeProviderServer, profiler: RecordingProfiler, mode: str
) -> AsyncIterator[Any]:
    """A wrapped OpenAI or AsyncOpenAI client pointed at the fake server."""
    cls = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
    client = cls(base_url=server.openai_base_url, api_key="test", max_retries=0)
    yield wrap_openai(client, prompt_id="faq", version="v1", labels={"team": "search"},
                      profiler=profiler)
    result = client.close()
    if inspect.isawaitable(result):
        await result


@pytest.fixture
async def anthropic_client(
    server: FakeProviderServer, profiler: RecordingProfiler, mode: str
) -> AsyncIterator[Any]:
    """A wrapped Anthropic or AsyncAnthropic client pointed at the fake server."""
    cls = anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
    client = cls(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
    yield wrap_anthropic(client, prompt_id="support", version="v1", profiler=profiler)
    result = client.close()
    if inspect.isawaitable(result):
        await result
