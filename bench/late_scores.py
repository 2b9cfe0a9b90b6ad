"""Benchmark: what holding closed windows for late scores costs the worker.

Calls of ``--series`` series, one every 2 s of event time each for 20 minutes, none scored with
the call; every score comes as a quality event ``--delay`` seconds after its call (default 300 s:
an LLM judge running minutes behind), fed to one partition's aggregator (10 s and 60 s windows,
30 s lateness, ``quality_lateness_s`` 3600, no cap on the held windows) in arrival order, 500
events a batch, the watermark capped by the arrival clock as the worker caps it by the wall
clock.

Prints ``held_windows`` (windows held at the end), ``held_window_bytes`` (Python memory per held
window, measured with tracemalloc by restoring the held windows from their checkpoint form),
``checkpoint_bytes_per_held_window``, ``scores_landed_late`` and ``scores_dropped`` (should be
0), ``quality_updates`` (updates emitted), and ``us_per_event`` (CPU per event, calls and scores,
windows closed and updates made included) beside ``us_per_event_no_late_scores``, the same calls
with the scores inside the call events (nothing held, no update): the ratio is the price.

Usage: ``.venv/bin/python bench/late_scores.py [--quick]``; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

import _common
import orjson

from promptprof_processor.ingest.validation import Record, validate_events
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.windows.aggregator import WindowAggregator
from promptprof_processor.windows.late_scores import LateScores

T0 = 1_800_000_000 * NS_PER_S
SETTINGS = WindowSettings(widths_s=[10, 60], allowed_lateness_s=30, quality_lateness_s=3600,
                          max_held_quality_windows=10_000_000)
DURATION_S = 1200
EVERY_S = 2
BATCH = 500


def wire(series: int, at_s: float, *, score: float | None, late: bool) -> dict[str, Any]:
    """A call event (with ``score`` inside unless ``late``) or, if ``late``, its score event."""
    event: dict[str, Any] = {
        "schema_version": 1, "event_id": f"e{series}-{at_s}", "service.name": "svc",
        "start_time_unix_nano": T0 + round(at_s * NS_PER_S),
        "promptprof.prompt.id": f"p{series}", "promptprof.prompt.version": "v1",
        "gen_ai.request.model": "m",
    }
    if late:
        return {**event, "kind": "quality", "promptprof.quality.score": score,
                "promptprof.quality.metric": "judge"}
    event["promptprof.latency_ms"] = 100.0 + series % 50
    if score is not None:
        event["promptprof.quality.score"] = score
    return event


def arrivals(series: int, delay_s: float, late: bool) -> list[tuple[float, Record]]:
    """Every event with its arrival time, in arrival order, validated as the worker does."""
    raw: list[tuple[float, dict[str, Any]]] = []
    for s in range(series):
        for at in range(s % EVERY_S, DURATION_S, EVERY_S):
            score = (at * 7 + s) % 100 / 100
            raw.append((at, wire(s, at, score=None if late else score, late=False)))
            if late:
                raw.append((at + delay_s, wire(s, at, score=score, late=True)))
    raw.sort(key=lambda pair: pair[0])
    records, bad = validate_events([event for _, event in raw])
    assert not bad, bad[:1]
    return list(zip([at for at, _ in raw], records, strict=True))


def feed(events: list[tuple[float, Record]]) -> tuple[WindowAggregator, float, int, int]:
    """Aggregate in batches; return the aggregator, CPU seconds, dropped scores and updates."""
    agg = WindowAggregator(SETTINGS)
    dropped = updates = 0
    started = time.process_time()
    for i in range(0, len(events), BATCH):
        batch = events[i : i + BATCH]
        dropped += len(agg.add([event for _, event in batch]))
        arrived_ns = T0 + round(batch[-1][0] * NS_PER_S)
        agg.advance(min(agg.watermark_ns, arrived_ns - SETTINGS.allowed_lateness_ns))
        updates += len(agg.quality_updates())
    return agg, time.process_time() - started, dropped, updates


def held_bytes(late_scores: LateScores) -> tuple[float, float]:
    """Memory and checkpoint bytes per held window."""
    checkpoint = orjson.dumps(late_scores.changes(everything=True))
    held = len(late_scores)
    tracemalloc.start()
    restored = LateScores(late_scores.hold_ns, late_scores.max_held)
    restored.apply(orjson.loads(checkpoint))
    restored.restored(0)
    memory, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return memory / held, len(checkpoint) / held


def main() -> None:
    """Run both feeds and print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 series instead of 500")
    parser.add_argument("--series", type=int, default=None)
    parser.add_argument("--delay", type=float, default=300.0)
    args = parser.parse_args()
    series = args.series or (50 if args.quick else 500)
    _common.log("events", series=series)
    late = arrivals(series, args.delay, late=True)
    agg, cpu, dropped, updates = feed(late)
    memory, checkpoint = held_bytes(agg.late_scores)
    inline = arrivals(series, args.delay, late=False)
    _, cpu_inline, _, _ = feed(inline)
    _common.emit("late_scores", {
        "series": series,
        "score_delay_s": args.delay,
        "held_windows": len(agg.late_scores),
        "held_window_bytes": memory,
        "checkpoint_bytes_per_held_window": checkpoint,
        "scores_landed_late": agg.stats.scores_landed_late,
        "scores_dropped": dropped,
        "quality_updates": updates,
        "us_per_event": cpu / len(late) * 1e6,
        "us_per_event_no_late_scores": cpu_inline / len(inline) * 1e6,
        "ratio_cpu_per_call": (cpu / (len(late) / 2)) / (cpu_inline / len(inline)),
    })


if __name__ == "__main__":
    main()
