"""One latency definition: the processor's window percentiles and compare's "all calls" figures
agree on the same calls (within DDSketch's 1 % relative accuracy), and compare's tested
quantiles are those of the successful calls alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from promptprof import Call
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder
from promptprof_compare.runfile import CallRecord, RunFile, RunMetadata
from promptprof_compare.stats import compare_runs
from promptprof_processor.ingest.validation import CallColumns, validate_events
from promptprof_processor.windows.figures import CALL_FIELDS, Accumulator, SeriesTags

SKETCH_ACCURACY = 0.01


class _Sink:
    def enqueue(self, item: object) -> None:
        """Keep nothing: the test builds the events itself."""


def _events(seed: int, count: int) -> list[dict[str, Any]]:
    """Call events as the producer builds them: fast 429s, slow timeouts, successes."""
    rng = np.random.default_rng(seed)
    builder = EventBuilder("svc", "test", False, None)
    spec = make_spec("answer", "v1", "gpt-4o-mini", "openai")
    events = []
    for latency_ms, kind in zip(
        rng.lognormal(np.log(900), 0.5, count), rng.choice(3, count, p=[0.8, 0.1, 0.1]), strict=True
    ):
        call = Call(_Sink(), spec, 1.0)
        call.set_usage(100, 20)
        duration = {0: latency_ms, 1: latency_ms / 20, 2: latency_ms * 30}[int(kind)]
        call.end_ns = call.start_ns + int(duration * 1e6)
        if kind:
            call.set_error("RateLimitError" if kind == 1 else "TimeoutError")
        events.append(builder.build(call))
    return events


def _run(events: list[dict[str, Any]]) -> RunFile:
    records = [
        CallRecord(
            item_id=f"item-{index}",
            repetition=0,
            prompt_id="answer",
            prompt_version="v1",
            model="gpt-4o-mini",
            latency_ms=event["promptprof.latency_ms"],
            input_tokens=event["gen_ai.usage.input_tokens"],
            output_tokens=event["gen_ai.usage.output_tokens"],
            status=event["promptprof.status"],
            error_type=event.get("error.type"),
        )
        for index, event in enumerate(events)
    ]
    metadata = RunMetadata(
        suite="s", started_at=datetime(2026, 1, 1, tzinfo=UTC), provider="x", seed=0
    )
    return RunFile(run=metadata, prompts={"answer": records})


def _window_latency(events: list[dict[str, Any]]) -> dict[float, float]:
    records, rejected = validate_events(events)
    assert rejected == []
    accumulator = Accumulator()
    accumulator.add_calls(CallColumns.of_records(records, CALL_FIELDS))
    series = SeriesTags(service="svc", prompt_id="answer", prompt_version="v1", model="gpt-4o-mini")
    latency = accumulator.finish(series, 0, 60 * 10**9, 0).latency_ms
    assert latency is not None
    return {0.5: latency.p50, 0.95: latency.p95, 0.99: latency.p99}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_processor_and_compare_give_the_same_latency_on_the_same_calls(seed: int) -> None:
    events = _events(seed, 500)
    window = _window_latency(events)
    prompt = compare_runs(_run(events), _run(events)).prompts[0]
    for figure in prompt.latency_all_calls:
        assert figure.base_ms == pytest.approx(window[figure.quantile], rel=SKETCH_ACCURACY)
    ok = np.array([e["promptprof.latency_ms"] for e in events if e["promptprof.status"] == "ok"])
    tested = {metric.metric: metric.base for metric in prompt.metrics}
    for name, q in (("latency_p50", 0.5), ("latency_p95", 0.95), ("latency_p99", 0.99)):
        assert tested[name] == float(np.quantile(ok, q, method="lower"))
    assert tested["latency_p99"] != prompt.latency_all_calls[2].base_ms  # the timeouts differ
