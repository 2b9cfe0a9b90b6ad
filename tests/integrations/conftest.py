"""Fixtures for the client wrappers: the fake provider server, a profiler exporting to memory
(:class:`promptprof.testing.InMemoryExporter`) and helpers reading its events, clients.

Every client fixture is parametrized over the sync and the async client, so each test runs
twice; :func:`invoke` and :func:`drain` hide the difference (awaiting when needed).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import openai
import pytest

from promptprof import ProducerSettings, Profiler, Settings
from promptprof.integrations import wrap_anthropic, wrap_openai
from promptprof.testing import InMemoryExporter
from promptprof.testing._fake_providers import FakeProviderServer

RecordingProfiler = Profiler  # a profiler made by recording_profiler()


def recording_profiler(*, capture_text: bool = False, enabled: bool = True) -> Profiler:
    """A profiler whose events go to an :class:`InMemoryExporter` (no Kafka)."""
    producer = ProducerSettings(
        capture_text=capture_text, enabled=enabled, service_name="tests", compression="none",
        metrics_log_interval_s=0,
    )
    return Profiler(Settings(producer=producer), exporter=InMemoryExporter())


def events_of(profiler: Profiler) -> list[dict[str, Any]]:
    """The call events the profiler exported (after a flush)."""
    exporter = profiler.exporter
    assert isinstance(exporter, InMemoryExporter)
    assert profiler.flush(5)
    return exporter.events(flush=False)


def event_of(profiler: Profiler) -> dict[str, Any]:
    """The single call event the profiler exported."""
    events = events_of(profiler)
    assert len(events) == 1, events
    return events[0]


def queued(profiler: Profiler) -> int:
    """How many calls the profiler recorded so far."""
    return int(profiler.stats()["queued"])


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
def profiler() -> Iterator[Profiler]:
    """A fresh recording profiler (closed after the test)."""
    made = recording_profiler()
    yield made
    made.close(1)


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
