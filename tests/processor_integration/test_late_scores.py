"""Late scores through the real producer, worker, sink and InfluxDB: a score sent after its
call's window was written updates that window's point (one point, its calls unchanged), and a
score later than the quality lateness is dead-lettered with its reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from processor_integration.conftest import MODEL, NS, Pipeline, wait_until
from promptprof._profiler import Profiler, make_spec
from promptprof._record import Call
from promptprof_processor.windows.late_scores import TOO_LATE

pytestmark = pytest.mark.integration

WIDTH_S = 2
HOURS_2_NS = 2 * 3600 * NS


def _calls(profiler: Profiler, prompt_id: str, count: int) -> list[Call]:
    """``count`` calls started now, in the first half of a window, not yet enqueued."""
    while time.time_ns() % (WIDTH_S * NS) > NS // 2:
        time.sleep(0.01)
    spec = make_spec(prompt_id, "v1", model=MODEL)
    calls = []
    for _ in range(count):
        call = profiler.start_call(spec)
        assert call is not None
        calls.append(call)
    return calls


def _point(pipeline: Pipeline, prompt_id: str, ready: Callable[[dict[str, Any]], bool],
           what: str) -> dict[str, Any]:
    """The one ``llm_window`` point of ``prompt_id`` with calls once ``ready`` holds for it
    (the too-late score is counted in ``late_events`` of a window without calls)."""
    query = f"SELECT * FROM llm_window WHERE prompt_id='{prompt_id}' AND calls > 0"

    def check() -> dict[str, Any] | None:
        rows = pipeline.rows(query)
        assert len(rows) <= 1, rows
        return rows[0] if rows and ready(rows[0]) else None

    point: dict[str, Any] = wait_until(check, 60.0, what, pipeline.logs)
    return point


def test_a_late_score_updates_its_windows_point_and_a_too_late_one_is_dead_lettered(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH_S])
    pipeline.start_worker()
    profiler = pipeline.profiler()
    calls = _calls(profiler, "judged", 3)
    calls[0].score(0.2)  # before the call ends: it travels in the call event
    for call in calls:
        call.end_ns = call.start_ns + 100_000_000
        profiler.enqueue(call)
    assert profiler.flush(30)
    closed = _point(pipeline, "judged", lambda p: p["calls"] == 3, "the window's point")
    assert closed["quality_scored"] == 1.0

    for call in calls[1:]:
        call.score(0.8)  # after its window was written: a quality event
    ancient = _calls(profiler, "judged", 1)[0]
    ancient.start_ns -= HOURS_2_NS  # a call two hours old, never sent: its score is too late
    ancient.end_ns = ancient.start_ns + 100_000_000
    ancient.score(0.5)
    assert profiler.flush(30)

    updated = _point(pipeline, "judged", lambda p: p["quality_scored"] == 3.0,
                     "the late scores in the window's point")
    assert updated["quality_mean"] == pytest.approx(0.6)
    assert updated["quality_p10"] == pytest.approx(0.2, rel=0.01)
    untouched = {k: v for k, v in closed.items() if not k.startswith("quality_")}
    assert {k: updated[k] for k in untouched} == untouched  # calls, latency... as written
    ((_, headers),) = pipeline.read_topic(pipeline.topics.dead_letter, 1)
    assert headers["reason"].decode() == TOO_LATE
