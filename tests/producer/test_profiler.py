"""@profile and track: the host's results and exceptions pass through; calls are recorded."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

import promptprof
from promptprof import Call, Profiler, load_settings, profile
from promptprof.testing import InMemoryExporter


class _Stalled(InMemoryExporter):
    """An exporter that never takes a cycle (as Kafka down without a spool)."""

    def ready(self) -> bool:
        return False


def _profiler(
    exporter: InMemoryExporter | None = None, **producer: Any
) -> tuple[Profiler, InMemoryExporter]:
    """A profiler exporting to memory, and its exporter."""
    exporter = exporter or InMemoryExporter()
    settings = load_settings(producer={"metrics_log_interval_s": 0, **producer})
    exporter.profiler = Profiler(settings, exporter=exporter)
    return exporter.profiler, exporter


def test_sync_results_and_exceptions_pass_through() -> None:
    prof, exported = _profiler()
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
    events = exported.events()
    assert [e["promptprof.status"] for e in events] == ["ok", "error"]
    assert events[1]["error.type"] == "ValueError"
    assert answer.__name__ == "answer"


async def test_async_function_is_measured() -> None:
    prof, exported = _profiler()

    @profile(prompt_id="faq", version="v2", profiler=prof)
    async def answer() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    assert await answer() == "ok"
    (event,) = exported.events()
    assert event["promptprof.latency_ms"] >= 10


def test_prompt_id_defaults_to_function_name() -> None:
    prof, exported = _profiler()

    @profile(profiler=prof)
    def summarise() -> None:
        return None

    summarise()
    assert exported.events()[0]["promptprof.prompt.id"].endswith("summarise")


def test_track_records_usage_ttft_labels_and_errors() -> None:
    prof, exported = _profiler()
    with prof.track("faq", "v1", model="gpt-4o-mini", provider="openai") as call:
        call.first_token()
        call.set_usage(120, 30, cached_tokens=100)
        call.label("tenant", "acme")
    with pytest.raises(KeyError), prof.track("faq", "v1") as failing:
        raise KeyError("x")
    ok, failed = exported.events()
    assert ok["gen_ai.usage.input_tokens"] == 120
    assert ok["gen_ai.usage.cache_read.input_tokens"] == 100
    assert 0 <= ok["gen_ai.server.time_to_first_token"] <= ok["promptprof.latency_ms"]
    assert ok["promptprof.labels"] == {"tenant": "acme"}
    assert ok["promptprof.cost.usd"] > 0
    assert failed["error.type"] == "KeyError"
    assert isinstance(failing, Call)


def test_sampling_records_a_fraction_with_its_rate() -> None:
    prof, exported = _profiler(sample_rate=0.25)

    @profile(prompt_id="faq", profiler=prof)
    def f() -> None:
        return None

    for _ in range(4000):
        f()
    events = exported.events()
    assert 800 <= len(events) <= 1200
    assert {e["promptprof.sample_rate"] for e in events} == {0.25}


def test_disabled_profiler_records_nothing_and_still_calls() -> None:
    prof, exported = _profiler(enabled=False)

    @profile(prompt_id="faq", profiler=prof)
    def f() -> int:
        return 7

    assert f() == 7
    with prof.track("faq", "v1") as call:
        call.set_usage(1, 1)
    assert exported.events() == []


def test_full_buffer_drops_and_counts_without_raising() -> None:
    prof, _ = _profiler(_Stalled(), buffer_size=100)

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
    prof, _ = _profiler()

    def broken_put(item: object) -> bool:
        raise RuntimeError("internal bug")

    prof.buffer.put = broken_put  # type: ignore[method-assign]

    @profile(prompt_id="faq", profiler=prof)
    def f() -> int:
        return 1

    assert f() == 1
    assert prof.internal_errors == 1


def test_calls_after_close_are_counted_as_dropped() -> None:
    prof, exported = _profiler()

    @profile(prompt_id="faq", profiler=prof)
    def f() -> None:
        return None

    f()
    assert prof.close(5)
    for _ in range(3):
        f()
    with prof.track("faq", "v1"):
        pass
    stats = prof.stats()
    assert (stats["recorded"], stats["dropped_after_close"], stats["dropped"]) == (5, 4, 4)
    assert len(exported.events(flush=False)) == 1


def test_calls_after_close_of_a_never_started_profiler_are_counted() -> None:
    prof, _ = _profiler()
    assert prof.close(1)
    profile(prompt_id="faq", profiler=prof)(lambda: None)()
    assert prof.stats()["dropped_after_close"] == 1


def test_in_memory_exporter_installs_in_one_line() -> None:
    exporter = InMemoryExporter.install(service_name="checkout")

    @profile(prompt_id="answer", version="v3")
    def answer(question: str) -> str:
        return question.upper()

    try:
        assert answer("hi") == "HI"
        with promptprof.track("answer", "v3") as call:
            call.set_usage(10, 2)
            call.score(0.5, "judge")
        call.score(0.9, "late")
        events = exporter.events()
        assert [e["promptprof.prompt.id"] for e in events] == ["answer", "answer"]
        assert {e["service.name"] for e in events} == {"checkout"}
        assert events[1]["promptprof.quality.score"] == 0.5
        assert [q["promptprof.quality.metric"] for q in exporter.quality_events()] == ["late"]
        exporter.clear()
        assert exporter.events() == []
    finally:
        promptprof.shutdown()


def test_flush_returns_before_the_linger_passes() -> None:
    prof, exported = _profiler(linger_ms=60_000)

    @profile(prompt_id="faq", profiler=prof)
    def f() -> None:
        return None

    f()
    assert exported.flush(2)  # the first cycle is due at once
    f()
    assert exported.flush(2), "a flush waited for the 60 s linger"
    assert len(exported.events(flush=False)) == 2


def test_the_byte_limit_bounds_the_memory_queued_calls_with_texts_take() -> None:
    limit = 4 * 1024 * 1024
    prof, _ = _profiler(_Stalled(), max_bytes_held=limit)
    text = "x" * 2048
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            with prof.track("faq", "v1") as call:
                call.set_text(f"{text}{i}", f"{i}{text}")
                call.label("tenant", f"t{i}")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = prof.stats()
    prof.close(0.1)
    assert stats["recorded"] == 20_000 == stats["queued"] + stats["dropped_bytes_limit"]
    assert stats["dropped_bytes_limit"] > 15_000 and stats["dropped_buffer_full"] == 0
    assert stats["bytes_held"] <= limit
    assert held <= limit, f"{held} bytes held over the {limit} limit"
