"""@profile and track: the host's results and exceptions pass through; calls are recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from promptprof.config import load_settings
from promptprof.profiler import Profiler, profile
from promptprof.record import Call, EventBuilder


class RecordingProfiler(Profiler):
    """A profiler whose sender never starts: what it records stays in its buffer."""

    def _start(self) -> None:
        pass

    def events(self) -> list[dict[str, Any]]:
        builder = EventBuilder("svc", "test", False, None)
        return [builder.build(item) for item in self.buffer.take(10**6)]


def _profiler(**producer: Any) -> RecordingProfiler:
    return RecordingProfiler(load_settings(producer={"metrics_log_interval_s": 0, **producer}))


def test_sync_results_and_exceptions_pass_through() -> None:
    prof = _profiler()
    boom = ValueError("boom")

    @profile(prompt_id="faq", version="v2", model="gpt-4o", profiler=prof)
    def answer(x: int) -> int:
        if x < 0:
            raise boom
        return x * 2

    assert answer(21) == 42
    with pytest.raises(ValueError) as info:
        answer(-1)
    assert info.value is boom
    events = prof.events()
    assert [e["promptprof.status"] for e in events] == ["ok", "error"]
    assert events[1]["error.type"] == "ValueError"
    assert answer.__name__ == "answer"


async def test_async_function_is_measured() -> None:
    prof = _profiler()

    @profile(prompt_id="faq", version="v2", profiler=prof)
    async def answer() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    assert await answer() == "ok"
    (event,) = prof.events()
    assert event["promptprof.latency_ms"] >= 10


def test_prompt_id_defaults_to_function_name() -> None:
    prof = _profiler()

    @profile(profiler=prof)
    def summarise() -> None:
        return None

    summarise()
    assert prof.events()[0]["promptprof.prompt.id"].endswith("summarise")


def test_track_records_usage_ttft_labels_and_errors() -> None:
    prof = _profiler()
    with prof.track("faq", "v1", model="gpt-4o-mini", provider="openai") as call:
        call.first_token()
        call.set_usage(120, 30, cached_tokens=100)
        call.label("tenant", "acme")
    with pytest.raises(KeyError), prof.track("faq", "v1") as failing:
        raise KeyError("x")
    ok, failed = prof.events()
    assert ok["gen_ai.usage.input_tokens"] == 120
    assert ok["gen_ai.usage.cache_read.input_tokens"] == 100
    assert 0 <= ok["gen_ai.server.time_to_first_token"] <= ok["promptprof.latency_ms"]
    assert ok["promptprof.labels"] == {"tenant": "acme"}
    assert ok["promptprof.cost.usd"] > 0
    assert failed["error.type"] == "KeyError"
    assert isinstance(failing, Call)


def test_sampling_records_a_fraction_with_its_rate() -> None:
    prof = _profiler(sample_rate=0.25)

    @profile(prompt_id="faq", profiler=prof)
    def f() -> None:
        return None

    for _ in range(4000):
        f()
    events = prof.events()
    assert 800 <= len(events) <= 1200
    assert {e["promptprof.sample_rate"] for e in events} == {0.25}


def test_disabled_profiler_records_nothing_and_still_calls() -> None:
    prof = _profiler(enabled=False)

    @profile(prompt_id="faq", profiler=prof)
    def f() -> int:
        return 7

    assert f() == 7
    with prof.track("faq", "v1") as call:
        call.set_usage(1, 1)
    assert prof.events() == []


def test_full_buffer_drops_and_counts_without_raising() -> None:
    prof = _profiler(buffer_size=100)

    @profile(prompt_id="faq", profiler=prof)
    def f() -> None:
        return None

    for _ in range(250):
        f()
    stats = prof.stats()
    assert stats["recorded"] == 250
    assert stats["dropped_buffer_full"] == 150
    assert stats["buffer_depth"] == 100


def test_internal_failure_never_reaches_the_host() -> None:
    prof = _profiler()

    def broken_put(item: object) -> bool:
        raise RuntimeError("internal bug")

    prof.buffer.put = broken_put  # type: ignore[method-assign]

    @profile(prompt_id="faq", profiler=prof)
    def f() -> int:
        return 1

    assert f() == 1
    assert prof.internal_errors == 1
