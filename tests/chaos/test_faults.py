"""Fast fault cases against a real worker, Tansu and InfluxDB, complementing
``tests/processor_integration`` (which covers SIGKILL/SIGTERM restarts, an InfluxDB outage, a
second worker and mixed bad input): a flood of malformed records, a label with thousands of
distinct values under a series cap, producer clocks skewed into the past and the future, and a
10x burst that overflows the producer's buffer. Each checks an exact account of the calls:
counted in InfluxDB, or dropped by a documented policy with the count visible.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from processor_integration.conftest import (
    MODEL,
    NS,
    Pipeline,
    Traffic,
    WorkerProcess,
    wait_until,
)

from promptprof._envelope import encode_envelope
from promptprof._profiler import make_spec
from promptprof_tools.stack import run_sync

pytestmark = pytest.mark.integration

WIDTH = 2


def _worker(pipeline: Pipeline, **settings: str) -> WorkerProcess:
    """A worker of ``pipeline`` with extra ``PROMPTPROF_*`` settings (``WINDOWS__X=...``)."""
    name = f"worker-{len(pipeline.workers)}"
    data_dir = pipeline.tmp / name / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = pipeline.worker_env(data_dir)
    env.update({f"PROMPTPROF_{k}": v for k, v in settings.items()})
    worker = WorkerProcess(name, env, pipeline.tmp / f"{name}.log")
    pipeline.workers.append(worker)
    return worker.start()


def _sums(pipeline: Pipeline, where: str = "") -> dict[str, float]:
    rows = pipeline.rows(
        f"SELECT sum(events) AS events, sum(late_events) AS late FROM llm_window "
        f"WHERE width='{WIDTH}s' {where}"
    )
    return {"events": rows[0]["events"] or 0, "late": rows[0]["late"] or 0} if rows else {
        "events": 0, "late": 0
    }


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1_048_576)
    await producer.start()
    try:
        futures = [await producer.send(topic, value) for value in values]
        for future in futures:
            await future
    finally:
        await producer.stop()


def test_a_malformed_flood_goes_to_dead_letters_and_good_calls_all_count(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH])
    worker = pipeline.start_worker()
    traffic = pipeline.traffic()
    thread, stop = traffic.run_in_thread(30.0, 300, lambda i: ("good", 50.0 + i % 40, None))
    garbage = [b"\x00not json %d" % i for i in range(3000)]
    junk_envelopes = [encode_envelope([{"junk": j} for j in range(100)]) for _ in range(100)]
    try:
        wait_until(lambda: len(traffic.sent) >= 300, 20, "some good traffic")
        flood_started = time.monotonic()
        run_sync(_produce(pipeline.broker.bootstrap, pipeline.topics.calls,
                          garbage + junk_envelopes))
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join()
    traffic.flush()
    pipeline.wait_for_windows(traffic, WIDTH, timeout_s=60)
    recovered_s = time.monotonic() - flood_started
    expected_dead = len(garbage) + 100 * 100
    dead = pipeline.read_topic(pipeline.topics.dead_letter, expected_dead, timeout_s=60)
    assert len(dead) == expected_dead
    assert sum(pipeline.calls_by_prompt(WIDTH).values()) == len(traffic.sent)  # no duplicate
    assert worker.alive(), worker.log_tail()
    assert recovered_s < 30, recovered_s


def test_a_label_with_many_values_is_capped_into_the_overflow_series(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    cap, distinct = 50, 20_000
    pipeline = pipeline_factory(widths_s=[WIDTH])
    worker = _worker(pipeline, WINDOWS__LABEL_DIMENSIONS='["user"]',
                     WINDOWS__MAX_SERIES_PER_PROMPT=str(cap))
    profiler = pipeline.profiler()
    spec = make_spec("cardinal", "v1", model=MODEL)
    sent = 0
    for chunk in range(4):  # four bursts, a second apart: several windows
        while not 10_000_000 < time.time_ns() % NS < 900_000_000:
            time.sleep(0.002)
        for i in range(chunk * distinct // 4, (chunk + 1) * distinct // 4):
            call = profiler.start_call(spec)
            assert call is not None
            call.end_ns = call.start_ns + 30_000_000
            call.label("user", f"user-{i}")
            profiler.enqueue(call)
            sent += 1
        time.sleep(0.6)
    assert profiler.flush(30), profiler.stats()
    assert profiler.stats()["sent_events"] == sent

    wait_until(lambda: _sums(pipeline)["events"] >= sent, 60, "every call counted",
               pipeline.logs)
    time.sleep(2 * WIDTH)
    assert _sums(pipeline)["events"] == sent
    rows = pipeline.rows(f"SELECT events, \"user\" FROM llm_window WHERE width='{WIDTH}s'")
    per_window = Counter(r["time"] for r in rows)
    assert max(per_window.values()) <= cap + 1, per_window  # the cap, plus the overflow
    overflow = sum(r["events"] for r in rows if r["user"] == "__overflow__")
    assert overflow >= sent - cap * len(per_window)
    series = pipeline.rows('SHOW SERIES FROM llm_window')
    assert len(series) <= (cap + 1) * len(per_window)
    assert worker.alive(), worker.log_tail()


def test_skewed_clocks_past_is_counted_late_future_when_due_far_future_dead_letters(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH])
    worker = pipeline.start_worker()
    profiler = pipeline.profiler()
    normal = Traffic(profiler)
    specs = {p: make_spec(p, "v1", model=MODEL) for p in ("past", "future", "far-future")}
    skews_s = {"past": -3600.0, "future": 6.0, "far-future": 86_400.0}
    per_prompt = 500
    thread, stop = normal.run_in_thread(30.0, 200, lambda i: ("steady", 40.0, None))
    try:
        wait_until(lambda: len(normal.sent) >= 200, 20, "steady traffic")
        first_start = time.time_ns()
        for prompt, spec in specs.items():
            for _ in range(per_prompt):
                call = profiler.start_call(spec)
                assert call is not None
                call.start_ns += round(skews_s[prompt] * NS)
                call.end_ns = call.start_ns + 25_000_000
                profiler.enqueue(call)
        time.sleep(skews_s["future"] + 2 * WIDTH + 2)
    finally:
        stop.set()
        thread.join()
    normal.flush()
    pipeline.wait_for_windows(normal, WIDTH, timeout_s=60)

    def accounted() -> dict[str, float] | None:
        got = {p: _sums(pipeline, f"AND prompt_id='{p}'") for p in ("past", "future")}
        ok = got["past"]["late"] == per_prompt and got["future"]["events"] == per_prompt
        return got if ok else None

    got = wait_until(accounted, 30, "past calls counted late, future calls counted",
                     lambda: str([_sums(pipeline, f"AND prompt_id='{p}'") for p in specs]))
    # past: late for the only width, dropped from the figures, visible as late_events
    assert got["past"]["events"] == 0
    # future: in the windows of their own (future) time, written once that time came; a
    # window starts up to one width before the events it holds
    future_rows = pipeline.rows("SELECT events FROM llm_window WHERE prompt_id='future'")
    earliest = first_start + round((skews_s["future"] - WIDTH) * NS)
    assert future_rows and all(r["time"] >= earliest for r in future_rows), (earliest, future_rows)
    # far future: beyond windows.max_future_s, so dead letters with the reason; nothing held
    assert pipeline.rows("SELECT events FROM llm_window WHERE prompt_id='far-future'") == []
    dead = pipeline.read_topic(pipeline.topics.dead_letter, per_prompt, timeout_s=60)
    assert len(dead) == per_prompt
    assert all(b"ahead of the worker's clock" in headers["reason"] for _, headers in dead)
    assert sum(pipeline.calls_by_prompt(WIDTH).values()) == len(normal.sent) + per_prompt
    assert worker.alive(), worker.log_tail()


def test_a_10x_burst_drops_only_what_the_producer_counts(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH])
    worker = pipeline.start_worker()
    traffic = pipeline.traffic(buffer_size=1000, linger_ms=50)
    rate = 500
    traffic.run(3.0, rate, lambda i: ("burst", 30.0, None))
    # ten times the rate for two seconds, enqueued in 50 ms ticks
    traffic.run(2.0, 10 * rate, lambda i: ("burst", 30.0, None), tick_s=0.05)
    traffic.run(2.0, rate, lambda i: ("burst", 30.0, None))
    traffic.flush()
    stats: dict[str, Any] = traffic.profiler.stats()
    assert stats["recorded"] == len(traffic.sent)
    assert stats["recorded"] == stats["sent_events"] + stats["dropped"]
    assert stats["dropped"] == stats["dropped_buffer_full"]
    wait_until(lambda: sum(pipeline.calls_by_prompt(WIDTH).values()) >= stats["sent_events"],
               60, "every sent call counted", pipeline.logs)
    time.sleep(2 * WIDTH)
    assert sum(pipeline.calls_by_prompt(WIDTH).values()) == stats["sent_events"]
    assert worker.alive(), worker.log_tail()
