"""Exactly once, per window: whatever the consumer delivers twice, and wherever the worker
crashes and restarts from its last checkpoint, every window is emitted with the figures of a
run that saw each record once, and no window is ever emitted with other figures."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof._envelope import encode_envelope
from promptprof_processor.alerts import AlertEngine
from promptprof_processor.runtime.checkpoint import Chunk
from promptprof_processor.runtime.partition import Output, PartitionRun
from promptprof_processor.settings import WindowSettings
from tests.processor.runs import MemoryLog, clock

NS = 1_000_000_000
T0 = 1_800_000_000 * NS
SETTINGS = WindowSettings(widths_s=[2, 6], allowed_lateness_s=1.0, label_dimensions=["tenant"],
                          max_series_per_prompt=3)
FAR = T0 + 10_000 * NS

Key = tuple[str, str, int, int]


def record(offset: int, events: list[tuple[str, str, float, float]]) -> bytes:
    """An envelope of ``(prompt, tenant, seconds after T0, latency)`` events."""
    return encode_envelope([
        {"schema_version": 1, "event_id": f"e{offset}-{i}",
         "start_time_unix_nano": T0 + round(at * NS), "service.name": "svc",
         "promptprof.prompt.id": prompt, "promptprof.prompt.version": "v1",
         "gen_ai.request.model": "m", "promptprof.latency_ms": latency,
         "promptprof.labels": {"tenant": tenant}}
        for i, (prompt, tenant, at, latency) in enumerate(events)
    ])


def wall(offset: int) -> int:
    """The worker's clock when it takes record ``offset``: one second per record."""
    return T0 + (offset + 1) * NS


events = st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["t1", "t2", "t3", "t4"]),
                   st.floats(0, 1.5), st.floats(1, 5000))
logs = st.lists(st.lists(events, min_size=1, max_size=4), min_size=1, max_size=25).map(
    lambda log: [record(i, [(p, t, i + at, ms) for p, t, at, ms in evs])
                 for i, evs in enumerate(log)])
# each step: feed up to n records, first going back k (delivered twice), maybe checkpoint,
# maybe crash (restart from the last checkpoint)
steps = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 4), st.booleans(), st.booleans()),
                 min_size=1, max_size=20)


def emitted(outputs: list[Output]) -> dict[Key, Any]:
    return {(w.series.prompt_id, w.series.labels.get("tenant", ""), w.width_s,
             w.window_start_ns): w.model_dump(exclude={"closed_at_ns"})
            for w in (o.window for o in outputs) if w is not None}


def feed(run: PartitionRun, log: list[bytes], start: int, count: int) -> list[Output]:
    outputs = []
    for offset in range(start, min(start + count, len(log))):
        outputs += run.take(offset, log[offset], clock(wall(offset), 0.0))
    return outputs


def finish(run: PartitionRun) -> list[Output]:
    run.idle_timeout_s = 0.0
    return run.close_idle(clock(FAR, 1.0))


def straight(log: list[bytes]) -> dict[Key, Any]:
    run = PartitionRun(0, SETTINGS, next_offset=0)
    return emitted(feed(run, log, 0, len(log)) + finish(run))


@settings(max_examples=150, deadline=None)
@given(logs, steps)
def test_every_window_is_emitted_with_the_figures_of_a_single_pass(
    log: list[bytes], plan: list[tuple[int, int, bool, bool]]
) -> None:
    expected = straight(log)
    store = MemoryLog()
    run = PartitionRun(0, SETTINGS, next_offset=0)
    store.checkpoint(run)
    fetch = 0  # where the consumer fetches next
    seen: list[dict[Key, Any]] = []
    for count, back, checkpoint, crash in plan:
        fetch = max(0, fetch - back)
        outputs = feed(run, log, fetch, count)
        fetch = min(fetch + count, len(log))
        seen.append(emitted(outputs))
        if checkpoint:
            store.checkpoint(run)
        if crash:
            run = store.restore(0, SETTINGS)
            fetch = max(0, run.next_offset - back)
    seen.append(emitted(feed(run, log, fetch, len(log)) + finish(run)))
    for batch in seen:
        for key, figures in batch.items():
            assert figures == expected[key], key
    assert set().union(*seen) == set(expected)


def test_offsets_the_log_lacks_are_skipped_and_counted() -> None:
    run = PartitionRun(0, SETTINGS, next_offset=5)
    assert run.take(3, record(3, [("a", "t1", 0.1, 10.0)]), clock(wall(3))) == []
    run.take(8, record(8, [("a", "t1", 0.2, 10.0)]), clock(wall(8)))
    assert (run.next_offset, run.position.skipped, run.windows.stats.events) == (9, 3, 1)


def test_a_lost_log_restarts_the_position_and_keeps_the_open_windows() -> None:
    run = PartitionRun(0, SETTINGS, next_offset=0)
    feed(run, [record(0, [("a", "t1", 0.1, 10.0)]), record(1, [("a", "t1", 0.2, 10.0)])], 0, 2)
    run.restart_log(0)
    run.take(0, record(0, [("a", "t1", 0.3, 10.0)]), clock(wall(0), 0.0))
    closed = [o.window for o in finish(run) if o.window is not None and o.window.width_s == 2]
    assert [w.calls for w in closed] == [3.0]


def test_no_checkpoint_record_outgrows_its_chunk_size_whatever_the_series() -> None:
    store = MemoryLog(chunk_bytes=4096)
    many = WindowSettings(widths_s=[10, 60], label_dimensions=["tenant"],
                          max_series_per_prompt=5000)
    run = PartitionRun(0, many, next_offset=0)
    for offset in range(20):
        evs = [("a", f"t{offset * 100 + i}", 0.1, float(i)) for i in range(100)]
        run.take(offset, record(offset, evs), clock(T0 + NS))
    store.checkpoint(run)
    assert store.largest <= 4096 + 32 and len(store.chunks) > 10
    restored = store.restore(0, many)
    assert restored.windows.snapshot()["windows"] == run.windows.snapshot()["windows"]


def test_a_checkpoint_writes_only_what_changed_until_a_new_base_pays() -> None:
    store = MemoryLog(chunk_bytes=1 << 20)
    run = PartitionRun(0, SETTINGS, next_offset=0)
    feed(run, [record(i, [("a", f"t{i % 3}", i + 0.1, 10.0)]) for i in range(3)], 0, 3)
    store.checkpoint(run)
    base = len(store.chunks[-1])
    run.take(3, record(3, [("b", "t1", 3.1, 10.0)]), clock(wall(3)))
    store.checkpoint(run)
    assert len(store.chunks[-1]) < base
    chunk = Chunk.unpack(store.chunks[-1])
    assert chunk is not None and orjson.loads(chunk.data)["base"] is False


def test_alert_state_comes_back_from_a_base_and_the_changes_since() -> None:
    engine = AlertEngine()
    engine.restore(0, None)
    run = PartitionRun(0, SETTINGS, next_offset=0, alerts=engine)
    store = MemoryLog(chunk_bytes=1024)
    log = [record(i, [(p, t, i + 0.5, 100.0 * (1 + i % 3)) for p in "ab" for t in ("t1", "t2")])
           for i in range(40)]
    for start in range(0, 40, 8):
        feed(run, log, start, 8)
        store.checkpoint(run)
    restored = store.restore(0, SETTINGS, alerts=AlertEngine())
    assert restored.alerts is not None and restored.alerts.all_states(0) == engine.all_states(0)
    assert engine.all_states(0)  # the windows closed gave the engine state to carry
