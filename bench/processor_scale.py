"""How one stream-processor worker's speed, memory and checkpoints grow with the number of
active series, and whether it still counts every call once through a SIGKILL at that scale.

For each width (1,000, 10,000 and 100,000 series; ``--quick``: 1,000 and 10,000), on a private
Tansu and influxd: ``CALLS_PER_SERIES`` calls per series (realistic latency, TTFT, token, cost,
quality and error figures as :class:`_stack.EventFactory` draws them), their start times a
Poisson process over ``SPAN_S`` seconds of event time that ended minutes ago, every series busy
all along. Envelopes as the producer packs them per partition: up to 500 events of the series
bound for one partition (the series as columns), sent when full or when they span 2 s of event
time. One start marker per partition before the data, and, only after the kill below, one end
marker per partition 100 s after it.

The worker (the real ``promptprof worker``: windows [10, 60] s, allowed lateness 30 s, every
aggregate on, checkpoints every 2 s or less often when a checkpoint takes long, the sink on):

1. Worker A takes the data. The clock runs from its first start-marker window to the arrival
   of the last window the data alone closes (every 10 s window that ends at least the lateness
   before the data's last event, each holding the events it should); by then the worker has
   aggregated all but the last records of each partition. ``events_per_s_<n>_series`` = data
   events / that time. ``rss_mb`` is A's peak resident memory (VmHWM), and
   ``rss_mb_per_10k_series`` the growth from the 1,000-series run, per 10,000 series.
2. A is killed (SIGKILL) with every series' last 90 s of windows open. Worker B starts in its
   place: ``restore_s`` is from B's spawn until every partition is restored from its checkpoint
   (B's own ``restore_s`` for the slowest partition is ``restore_read_s``).
3. The end markers are produced; B closes the remaining windows. ``windows_counted_ratio`` =
   InfluxDB's ``sum(events)`` over the 10 s windows (and over the 60 s windows) / calls sent:
   1 means every call counted exactly once in each width, through the kill.

Checkpoint records are read back from the chunk topic: ``checkpoint_record_bytes_max`` is the
largest record the worker wrote (Kafka's default limit is 1 MB), ``checkpoint_mb_per_s`` the
bytes of chunks written per second of A's run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import _common
import _stack
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from promptprof.profiler import make_spec

WIDTHS = [10, 60]
LATENESS_S = 30
SPAN_S = 120.0
CALLS_PER_SERIES = 20
BATCH = 500
START_MARKER = "bench-start-marker"
END_MARKER = "bench-end-marker"
NS = _stack.NS


def series(count: int) -> list[_stack.SeriesSpec]:
    """``count`` series of equal traffic: prompts x versions over the four model profiles."""
    out = []
    for i in range(count):
        model = _stack.MODELS[i % len(_stack.MODELS)]
        prompt = f"{_stack.PROMPTS[i % len(_stack.PROMPTS)]}-{i // 40}"
        spec = make_spec(prompt, f"v{i // 10 % 4}", model.model, model.provider, "chat", {})
        out.append(_stack.SeriesSpec(spec, model, 1.0))
    return out


def build(count: int, seed: int = 7) -> tuple[list[_stack.Record], list[_stack.Record], int, int]:
    """(start markers and data envelopes, end markers, data events, last event time ns)."""
    now = time.time_ns()
    start = now - int((SPAN_S + 300) * NS)
    start -= start % (60 * NS)
    total = count * CALLS_PER_SERIES
    rng = random.Random(seed)
    times = _stack.poisson_times(rng, start, total / SPAN_S, total)
    specs = series(count)
    order = [i % count for i in range(total)]
    rng.shuffle(order)
    factory = _stack.EventFactory(specs[:200], seed)
    pool = [factory.event(specs[i], start) for i in range(min(200, count))]
    pairs = []
    for n, (t, s) in enumerate(zip(times, order, strict=True)):
        event = dict(pool[s % len(pool)])
        spec = specs[s].spec
        event["promptprof.prompt.id"] = spec.prompt_id
        event["promptprof.prompt.version"] = spec.version
        event["gen_ai.request.model"] = spec.model
        event["start_time_unix_nano"] = t
        event["event_id"] = f"s{seed}-{n:x}"
        pairs.append((event, b"group-%d" % (s % 64)))  # a group stays on one partition
    records = _stack.marker_records(START_MARKER, start - 120 * NS, _stack.PARTITIONS)
    records += _stack.full_envelopes(pairs, BATCH, max_age_s=2.0)
    ends = _stack.marker_records(END_MARKER, times[-1] + 100 * NS, _stack.PARTITIONS)
    return records, ends, total, times[-1]


def expected_closed(records: list[_stack.Record], last_ns: int) -> int:
    """Data events in the 10 s windows the data alone closes."""
    limit = last_ns - LATENESS_S * NS
    limit -= limit % (10 * NS)
    count = 0
    for record in records:
        doc = orjson.loads(record.value)
        fields = doc["fields"]
        if fields["promptprof.prompt.id"] == START_MARKER:
            continue
        times = fields["start_time_unix_nano"]
        times = times if isinstance(times, list) else [times] * doc["count"]
        count += sum(t < limit for t in times)
    return count


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


async def follow(stack: _stack.BenchStack, worker: _stack.WorkerProcess, closable: int,
                 last_ns: int, timeout_s: float) -> dict[str, float]:
    """Watch the windows topic until the windows the data closes hold ``closable`` events."""
    limit = last_ns - LATENESS_S * NS
    watcher = _stack.WindowWatcher(stack.bootstrap)
    await watcher.start(stack.partitions)
    t_first, counted = None, 0
    deadline = time.monotonic() + timeout_s
    try:
        while counted < closable:
            if time.monotonic() > deadline:
                raise TimeoutError(f"closed windows hold {counted} of {closable} events")
            worker.check()
            for window in await watcher.poll(50):
                prompt = window["series"]["prompt_id"]
                if prompt == START_MARKER and t_first is None:
                    t_first = watcher.seen[-1][0]
                elif (prompt != START_MARKER and window["width_s"] == 10
                      and window["window_start_ns"] + 10 * NS <= limit):
                    counted += window["events"]
        assert t_first is not None
        return {"t_first": t_first, "t_last": watcher.seen[-1][0]}
    finally:
        await watcher.stop()


async def chunk_sizes(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The value size of every record in ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_bytes=32 * 1_048_576,
                                max_partition_fetch_bytes=16 * 1_048_576)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        sizes: list[int] = []
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            sizes += [len(r.value or b"") for rs in batches.values() for r in rs]
            ends = [consumer.highwater(tp) for tp in tps]
            positions = [await consumer.position(tp) for tp in tps]
            if all(e is not None and p >= e for e, p in zip(ends, positions, strict=True)):
                return sizes
    finally:
        await consumer.stop()


def restored_log(worker: _stack.WorkerProcess, partitions: int, timeout_s: float) -> float:
    """Seconds from ``worker``'s spawn until its log shows every partition restored; returns
    the slowest partition's own restore time too, via the log's ``restore_s`` fields."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check()
        found = re.findall(r"partition_restored.*?restore_s=([\d.]+)", worker.tail(10_000))
        if len(found) >= partitions:
            return max(map(float, found))
        time.sleep(0.05)
    raise TimeoutError("partitions not restored")


def one_width(count: int, timeout_s: float) -> dict[str, Any]:
    """The figures of one width."""
    with _stack.BenchStack() as stack:
        with _stack.stage(f"building {count} series"):
            records, ends, total, last_ns = build(count)
            closable = expected_closed(records, last_ns)
        with _stack.stage("producing"):
            asyncio.run(_stack.produce(stack.bootstrap, _stack.TOPICS.calls, records))
        env = stack.worker_env(
            windows__widths_s=WIDTHS, windows__allowed_lateness_s=LATENESS_S,
            worker__checkpoint_interval_s=2, worker__idle_timeout_s=3600,
            worker__sink_enabled="true", log_level="info",
        )
        first = stack.start_worker(env)
        with _stack.stage("worker A"):
            seen = asyncio.run(follow(stack, first, closable, last_ns, timeout_s))
        span = seen["t_last"] - seen["t_first"]
        rss = peak_rss_mb(first.pid)
        first.popen.kill()
        first.popen.wait()
        second = stack.start_worker(env)
        with _stack.stage("worker B restore"):
            restore_read = restored_log(second, stack.partitions, timeout_s)
            restore_s = time.monotonic() - second.started
        asyncio.run(_stack.produce(stack.bootstrap, _stack.TOPICS.calls, ends))
        ratios = {}
        for width in WIDTHS:
            rows = _stack.influx_wait(
                stack, f"SELECT sum(events) AS n FROM llm_window WHERE width = '{width}s' "
                f"AND prompt_id != '{START_MARKER}' AND prompt_id != '{END_MARKER}'",
                lambda rows: bool(rows) and rows[0]["n"] >= total, timeout_s=timeout_s)
            ratios[width] = (rows[0]["n"] if rows else 0) / total
        app_id = env["PROMPTPROF_WORKER__APP_ID"]
        sizes = asyncio.run(chunk_sizes(stack.bootstrap, f"{app_id}-checkpoint-chunks",
                                        stack.partitions))
        second.stop()
    return {
        "series": count, "events": total, "records": len(records),
        "events_per_s": closable / span, "timed_s": span, "rss_mb": rss,
        "restore_s": restore_s, "restore_read_s": restore_read,
        "windows_counted_ratio": ratios[10], "windows_counted_ratio_60s": ratios[60],
        "checkpoint_record_bytes_max": max(sizes, default=0),
        "checkpoint_mb_per_s": sum(sizes) / 1e6 / span,
    }


def main() -> None:
    """Parse arguments, run every width, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 series only")
    parser.add_argument("--widths", type=int, nargs="*", help="numbers of series")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per stage")
    args = parser.parse_args()
    widths = args.widths or ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    _common.setup()
    runs = {count: one_width(count, args.timeout) for count in widths}
    figures: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count()}
    for count, run in runs.items():
        name = f"{count // 1000}k_series"
        figures |= {f"{key}_{name}": value for key, value in run.items() if key != "series"}
    if 1_000 in runs and len(runs) > 1:
        top = max(runs)
        growth = (runs[top]["rss_mb"] - runs[1_000]["rss_mb"]) / ((top - 1_000) / 10_000)
        figures["rss_mb_per_10k_series"] = growth
    figures["checkpoint_record_bytes_max"] = max(r["checkpoint_record_bytes_max"]
                                                 for r in runs.values())
    _common.emit("processor_scale", figures)


if __name__ == "__main__":
    main()
