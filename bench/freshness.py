"""How long after a window may close its point becomes queryable in InfluxDB, under live traffic.

Set-up: a private Tansu and influxd, and the real ``promptprof worker`` with windows of
``--width`` s (default 2), allowed lateness ``--lateness`` s (default 1), idle timeout 1 s, the
sink on. Traffic goes through the real producer (:class:`promptprof._profiler.Profiler`, default
settings: linger 50 ms, envelopes of up to 500 events, lz4): calls arrive as a Poisson process
of ``--rate`` per second (default 500) over 20 series with skewed shares, each call a task that
awaits the simulated provider (TTFT, tokens, quality, errors) with its latencies scaled by
``--time-scale`` (default 0.25: calls of about 0.1-0.8 s, so nearly all finish within the
lateness).

Before the traffic the worker has joined its group and written a warm-up window (start-up is
not measured). While the traffic runs (``--duration`` s, default 120, quick 25), a thread polls
InfluxDB every ``--poll`` s (default 0.05) for the ``llm_window`` points of the last minute and
notes the wall-clock time of the poll in which each (series, window) point first appeared.

For each point: ``lag_beyond = first_seen - (window_end + allowed_lateness)``, i.e. how long after
the earliest moment the window may close by definition its figures could be read. Event time is
the producer's wall clock (same machine). A point's first_seen is the start of the poll that
returned it, so lags are upper bounds by up to one poll interval plus the query's duration. The
first two windows of the traffic and any window ending after the traffic stopped are left out;
``lag_beyond_window_s_p50``/``_p95``/``_max`` are over the remaining points (``points``, from
``windows`` windows). ``call_to_queryable_s_p50`` = first_seen - window_start - width / 2, the
typical age of a call when its window becomes readable. The last windows, which close only by
the idle timeout after the traffic stops, are reported apart (``idle_close_lag_beyond_s_max``).
Target: ``lag_beyond_window_s_max`` <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import threading
import time
from typing import Any

import _common
import _stack
from aiokafka import AIOKafkaConsumer, TopicPartition

from promptprof import KafkaSettings, ProducerSettings, Profiler, Settings, TopicSettings
from promptprof._envelope import decode_record
from promptprof_tools.simulate import SimulatedError, SimulatedProvider

NS = _stack.NS
TARGET_S = 2.0
STEADY_MARGIN_NS = 200_000_000


def pct(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a sorted list, None when empty (JSON has no NaN)."""
    return _common.percentile(ordered, q) if ordered else None


class InfluxPoller(threading.Thread):
    """Polls ``llm_window`` points and notes when each (series, window start) first appears."""

    def __init__(self, stack: _stack.BenchStack, width_s: int, since_ns: int, every_s: float):
        super().__init__(name="influx-poller", daemon=True)
        self.stack, self.width, self.since, self.every = stack, f"{width_s}s", since_ns, every_s
        self.first_seen: dict[tuple[str, str, str, int], tuple[int, int]] = {}
        self.polls = 0
        self.errors = 0
        self.query_s: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.time_ns()
            t0 = time.perf_counter()
            floor = max(self.since, started - 60 * NS)
            try:
                rows = self.stack.influx_rows(
                    f"SELECT events, late_events FROM llm_window WHERE width = '{self.width}' "
                    f"AND time >= {floor} GROUP BY prompt_id, prompt_version, model"
                )
            except Exception:
                self.errors += 1
                rows = []
            self.query_s.append(time.perf_counter() - t0)
            self.polls += 1
            for row in rows:
                key = (row["prompt_id"], row["prompt_version"], row["model"], int(row["time"]))
                if key not in self.first_seen:
                    self.first_seen[key] = (started, int(row["events"]))
            self._halt.wait(max(0.0, self.every - (time.perf_counter() - t0)))

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._halt.set()
        self.join(5.0)


class TopicWatcher(threading.Thread):
    """Follows the windows topic and notes when each (series, window start) arrived there."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="windows-watcher", daemon=True)
        self.bootstrap = bootstrap
        self.first_seen: dict[tuple[str, str, str, int], int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        watcher = _stack.WindowWatcher(self.bootstrap)
        await watcher.start()
        try:
            while not self._halt.is_set():
                for w in await watcher.poll(20):
                    s = w["series"]
                    key = (s["prompt_id"], s["prompt_version"], s["model"], w["window_start_ns"])
                    self.first_seen.setdefault(key, time.time_ns())
        finally:
            await watcher.stop()

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._halt.set()
        self.join(5.0)


class CallsWatcher(threading.Thread):
    """Follows the calls topic: per partition, when records arrived and the latest start time
    seen so far (what the worker's watermark follows), and which series key lives where."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        super().__init__(name="calls-watcher", daemon=True)
        self.bootstrap, self.partitions = bootstrap, partitions
        self.arrivals: dict[int, list[tuple[int, int]]] = {p: [] for p in range(partitions)}
        self.partition_of: dict[bytes, int] = {}
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await consumer.start()
        try:
            tps = [TopicPartition(_stack.TOPICS.calls, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self.ready.set()
            while not self._halt.is_set():
                batches = await consumer.getmany(timeout_ms=20)
                now = time.time_ns()
                for tp, records in batches.items():
                    seen = self.arrivals[tp.partition]
                    for r in records:
                        latest = max(e["start_time_unix_nano"] for e in decode_record(r.value))
                        latest = max(latest, seen[-1][1] if seen else 0)
                        seen.append((now, latest))
                        if r.key is not None:
                            self.partition_of[r.key] = tp.partition
        finally:
            self.ready.set()
            await consumer.stop()

    def reached(self, key: bytes, due_ns: int) -> int | None:
        """When the partition of series ``key`` first held an event starting at/after ``due_ns``."""
        partition = self.partition_of.get(key)
        if partition is None:
            return None
        for arrived, latest in self.arrivals[partition]:
            if latest >= due_ns:
                return arrived
        return None

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._halt.set()
        self.join(5.0)


async def traffic(
    profiler: Profiler,
    series: list[_stack.SeriesSpec],
    rate: float,
    duration_s: float,
    time_scale: float,
    seed: int = 17,
) -> tuple[int, int]:
    """Poisson arrivals of calls through the real profiler, each awaiting the simulated provider."""
    rng = random.Random(seed)
    provider = SimulatedProvider(seed + 1, time_scale)
    weights = [s.weight for s in series]
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def call(s: _stack.SeriesSpec) -> None:
        spec = s.spec
        try:
            async with profiler.track(
                spec.prompt_id,
                spec.version,
                model=spec.model,
                provider=spec.provider,
                labels=dict(spec.labels),
            ) as c:
                await provider.complete(s.model, c)
        except SimulatedError:
            pass

    start = loop.time()
    next_at = start
    calls = 0
    stopped_ns = 0
    while next_at - start < duration_s:
        for s in rng.choices(series, weights, k=1):
            task = asyncio.create_task(call(s))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            calls += 1
        next_at += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    stopped_ns = time.time_ns()
    if tasks:
        await asyncio.gather(*tasks)
    return calls, stopped_ns


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the figures."""
    width_ns, lateness_ns = args.width * NS, int(args.lateness * NS)
    load_before = os.getloadavg()[0]
    with _stack.BenchStack() as stack:
        env = stack.worker_env(
            windows__widths_s=[args.width],
            windows__allowed_lateness_s=args.lateness,
            worker__idle_timeout_s=1,
            worker__sink_enabled="true",
        )
        worker = stack.start_worker(env)
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=stack.bootstrap),
            topics=TopicSettings(),
            producer=ProducerSettings(
                service_name=_stack.SERVICE, environment="bench", metrics_log_interval_s=0
            ),
        )
        profiler = Profiler(settings)
        series = _stack.series_mix(20)
        try:
            with _stack.stage("worker start-up (warm-up window in InfluxDB)"):
                t_spawn = worker.started
                with profiler.track("bench-warmup", "1", model="gpt-4o-mini"):
                    pass
                profiler.flush(30.0)
                _stack.influx_wait(
                    stack,
                    "SELECT count(events) AS n FROM llm_window",
                    lambda rows: bool(rows) and rows[0]["n"] > 0,
                    timeout_s=90.0,
                )
                worker.check()
                startup_s = time.monotonic() - t_spawn
            t_start = time.time_ns()
            poller = InfluxPoller(stack, args.width, t_start - width_ns, args.poll)
            poller.start()
            topic = TopicWatcher(stack.bootstrap)
            topic.start()
            intake = CallsWatcher(stack.bootstrap, stack.partitions)
            intake.start()
            intake.ready.wait(10.0)
            with _stack.stage(f"traffic {args.rate}/s for {args.duration}s"):
                calls, t_end = asyncio.run(
                    traffic(profiler, series, args.rate, args.duration, args.time_scale)
                )
            profiler.flush(30.0)
            # the last windows close by the idle timeout: wait for them
            time.sleep(args.lateness + 1.0 + 1.0 + 2.0 + args.width)
            poller.stop()
            topic.stop()
            intake.stop()
            worker.check()
            stats = profiler.stats()
        finally:
            profiler.close(5.0)
        rows = stack.influx_rows(
            f"SELECT sum(events) AS events, sum(late_events) AS late FROM llm_window "
            f"WHERE width = '{args.width}s' AND prompt_id != 'bench-warmup'"
        )
    first_window = t_start - t_start % width_ns + 2 * width_ns
    steady: list[float] = []
    by_window: dict[int, list[float]] = {}
    idle: list[float] = []
    closing: list[float] = []
    sinking: list[float] = []
    arriving: list[float] = []
    working: list[float] = []
    for key, (seen, _) in poller.first_seen.items():
        prompt, version, model, start = key
        if prompt == "bench-warmup" or start < first_window:
            continue
        due = start + width_ns + lateness_ns
        lag = (seen - due) / NS
        # a window closes by the watermark only if calls started after its end + lateness
        if due + STEADY_MARGIN_NS <= t_end:
            steady.append(lag)
            by_window.setdefault(start, []).append(lag)
            on_topic = topic.first_seen.get(key)
            if on_topic is not None:
                closing.append((on_topic - due) / NS)
                sinking.append((seen - on_topic) / NS)
                kafka_key = "\x1f".join((_stack.SERVICE, prompt, version, model)).encode()
                reached = intake.reached(kafka_key, due)
                if reached is not None:
                    arriving.append((reached - due) / NS)
                    working.append((on_topic - reached) / NS)
        else:
            idle.append(lag)
    for figures in (closing, sinking, arriving, working):
        figures.sort()
    for start in sorted(by_window):
        lags = sorted(by_window[start])
        _common.log(
            "window",
            start_s=round((start - t_start) / NS, 1),
            lag_min=round(lags[0], 3),
            lag_med=round(lags[len(lags) // 2], 3),
            lag_max=round(lags[-1], 3),
            points=len(lags),
        )
    steady.sort()
    window_max = sorted(max(v) for v in by_window.values())
    ages = sorted(lag + args.lateness + args.width / 2 for lag in steady)
    events = rows[0]["events"] if rows else 0
    return {
        "lag_beyond_window_s_p50": pct(steady, 50),
        "lag_beyond_window_s_p95": pct(steady, 95),
        "lag_beyond_window_s_max": steady[-1] if steady else None,
        "target_s": TARGET_S,
        "target_met": bool(steady) and steady[-1] <= TARGET_S,
        "window_complete_lag_beyond_s_p50": pct(window_max, 50),
        "on_windows_topic_lag_beyond_s_p50": pct(closing, 50),
        "on_windows_topic_lag_beyond_s_max": closing[-1] if closing else None,
        "due_to_closing_event_in_kafka_s_p50": pct(arriving, 50),
        "due_to_closing_event_in_kafka_s_max": arriving[-1] if arriving else None,
        "worker_close_s_p50": pct(working, 50),
        "worker_close_s_max": working[-1] if working else None,
        "topic_to_influx_s_p50": pct(sinking, 50),
        "topic_to_influx_s_max": sinking[-1] if sinking else None,
        "call_to_queryable_s_p50": pct(ages, 50),
        "idle_close_lag_beyond_s_max": max(idle) if idle else None,
        "points": len(steady),
        "windows": len(by_window),
        "width_s": args.width,
        "allowed_lateness_s": args.lateness,
        "rate_calls_per_s": calls / args.duration,
        "calls": calls,
        "sent_events": stats.get("sent_events", 0),
        "dropped": stats.get("dropped", 0),
        "events_in_windows": events,
        "late_events": rows[0]["late"] if rows else 0,
        "startup_s": startup_s,
        "poll_s": args.poll,
        "polls": poller.polls,
        "poll_query_s_p50": pct(sorted(poller.query_s), 50),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter traffic (within 60 s)")
    parser.add_argument("--duration", type=float, help="seconds of traffic (120; quick 25)")
    parser.add_argument("--rate", type=float, default=500.0, help="calls per second")
    parser.add_argument("--width", type=int, default=2, help="window width in seconds")
    parser.add_argument("--lateness", type=float, default=2.0, help="allowed lateness, seconds")
    parser.add_argument("--time-scale", type=float, default=0.25, help="call latency scale")
    parser.add_argument("--poll", type=float, default=0.05, help="InfluxDB poll interval, s")
    args = parser.parse_args()
    args.duration = args.duration or (25.0 if args.quick else 120.0)
    _common.setup()
    figures = run(args)
    _common.emit("freshness", {"quick": args.quick, **figures})


if __name__ == "__main__":
    main()
