"""How one stream-processor worker's speed, memory and checkpoints grow with the number of
active series, and whether it still counts every call once through a SIGKILL at that scale.

For each width (1,000, 10,000 and 100,000 series; ``--quick``: 10,000 with 5 s of calls, so
``rss_mb_per_10k_series`` is not printed), on a private Tansu and influxd: every series makes
one call per second for ``SPAN_S`` seconds of event time that ended minutes ago (realistic
latency, TTFT, token, cost, quality and error figures as :class:`_stack.EventFactory` draws
them), so each series has about ten calls in each 10 s window. Envelopes as the producer packs
them per partition: up to 500 events of the series bound for one partition (the series as
columns), sent when full or when they span 2 s of event time. One start marker per partition
before the data; the end markers come later.

The worker (the real ``promptprof worker``: windows [10, 60] s, allowed lateness 30 s, every
aggregate on, checkpoints every 2 s or less often when a checkpoint takes long, the sink on):

1. Worker A takes the data. Its clock runs from its first start-marker window (it has then
   taken its first data record) until its committed offsets, which follow its checkpoints,
   reach the end of every partition: ``events_per_s_<n>_series`` = data events / that time, a
   lower bound (it includes the wait for the last checkpoint). ``rss_mb`` is A's peak resident
   memory (VmHWM), ``rss_mb_per_10k_series`` its growth from the 1,000-series run per 10,000.
2. A is killed (SIGKILL) with every series' windows open (the data spans less than the
   lateness). ``worker_cpu_us_per_event`` is A's CPU time (start-up included) per event.
   Worker B starts in its place: ``restore_s`` is from B's spawn until every
   partition is restored from its checkpoint, ``restore_read_s`` B's own time for the slowest
   partition (reading its checkpoint and rebuilding the state).
3. The end markers are produced; B closes every window. ``windows_counted_ratio`` = InfluxDB's
   ``sum(events)`` over the 10 s windows / calls sent (``_60s``: over the 60 s windows): 1
   means every call counted exactly once in each width, through the kill.

Checkpoint records are read back from the chunk topic: ``checkpoint_record_bytes_max`` is the
largest record the worker wrote (Kafka's default limit is 1 MB), ``checkpoint_mb_per_s`` the
bytes of chunks written per second of A's run, and ``checkpoint_bytes_per_series`` what the newest
heads commit (what B read to restore), per series.
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
from aiokafka import AIOKafkaConsumer, TopicPartition
from processor_throughput import cpu_seconds

from promptprof._profiler import make_spec
from promptprof_processor.runtime.checkpoint import Head

WIDTHS = [10, 60]
LATENESS_S = 30
SPAN_S = 20.0  # under the lateness: no window closes before the end markers
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


def build(
    count: int, span_s: float, seed: int = 7
) -> tuple[list[_stack.Record], list[_stack.Record], int]:
    """(start markers and data envelopes, end markers, data events): one call per series and
    second of ``span_s``."""
    now = time.time_ns()
    start = now - int((span_s + 300) * NS)
    start -= start % (60 * NS)
    total = int(count * span_s)
    rng = random.Random(seed)
    times = _stack.poisson_times(rng, start, total / span_s, total)
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
    return records, ends, total


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


async def caught_up(bootstrap: str, app_id: str, partitions: int, timeout_s: float,
                    worker: _stack.WorkerProcess) -> dict[str, float]:
    """(first start-marker window, the moment the group's commits reach every log's end)."""
    watcher = _stack.WindowWatcher(bootstrap)
    await watcher.start(partitions)
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=app_id,
                             enable_auto_commit=False)
    await group.start()
    tps = [TopicPartition(_stack.TOPICS.calls, p) for p in range(partitions)]
    ends = await log_ends(bootstrap, tps)
    t_first = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            worker.check()
            for window in await watcher.poll(50):
                if window["series"]["prompt_id"] == START_MARKER and t_first is None:
                    t_first = watcher.seen[-1][0]
            committed = [await group.committed(tp) or 0 for tp in tps]
            if t_first is not None and all(c >= ends[tp] for c, tp in zip(committed, tps,
                                                                           strict=True)):
                return {"t_first": t_first, "t_last": time.monotonic()}
            await asyncio.sleep(0.1)
        raise TimeoutError(f"commits short of the logs' ends after {timeout_s} s")
    finally:
        await group.stop()
        await watcher.stop()


async def log_ends(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's end as a fetch's high watermark (Tansu's ListOffsets answers less)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        while any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


async def read_all(
    bootstrap: str, topic: str, partitions: int
) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record in ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_bytes=32 * 1_048_576,
                                max_partition_fetch_bytes=16 * 1_048_576)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[tuple[int, int, bytes]] = []
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            records += [(r.partition, r.offset, r.value or b"")
                        for rs in batches.values() for r in rs]
            ends = [consumer.highwater(tp) for tp in tps]
            positions = [await consumer.position(tp) for tp in tps]
            if all(e is not None and p >= e for e, p in zip(ends, positions, strict=True)):
                return records
    finally:
        await consumer.stop()


def checkpoint_figures(bootstrap: str, app_id: str, partitions: int) -> dict[str, float]:
    """The largest chunk record, all chunk bytes, and the bytes the newest heads commit (what
    a restore reads)."""
    chunks = asyncio.run(read_all(bootstrap, f"{app_id}-checkpoint-chunks", partitions))
    heads = asyncio.run(read_all(bootstrap, f"{app_id}-checkpoint-heads", partitions))
    newest: dict[int, Head] = {}
    for partition, _, value in heads:
        head = Head.unpack(value)
        if head is not None:
            newest[partition] = head
    restored = sum(len(v) for p, o, v in chunks
                   if p in newest and newest[p].base_offset <= o < newest[p].end_offset)
    return {"largest": max((len(v) for _, _, v in chunks), default=0),
            "written": sum(len(v) for _, _, v in chunks), "restored": restored}


def restored_log(
    worker: _stack.WorkerProcess, partitions: int, timeout_s: float, log_from: int
) -> float:
    """Wait until ``worker``'s log (past byte ``log_from``) shows every partition restored;
    return the slowest partition's own ``restore_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check()
        text = worker.log_path.read_bytes()[log_from:].decode(errors="replace")
        found = re.findall(r"partition_restored.*?restore_s=([\d.]+)", text)
        if len(found) >= partitions:
            return max(map(float, found))
        time.sleep(0.05)
    raise TimeoutError("partitions not restored")


def one_width(count: int, span_s: float, timeout_s: float) -> dict[str, Any]:
    """The figures of one width."""
    with _stack.BenchStack() as stack:
        with _stack.stage(f"building {count} series"):
            records, ends, total = build(count, span_s)
        with _stack.stage("producing"):
            asyncio.run(_stack.produce(stack.bootstrap, _stack.TOPICS.calls, records))
        env = stack.worker_env(
            windows__widths_s=WIDTHS, windows__allowed_lateness_s=LATENESS_S,
            worker__checkpoint_interval_s=2, worker__idle_timeout_s=3600,
            worker__sink_enabled="true", log_level="info",
        )
        app_id = env["PROMPTPROF_WORKER__APP_ID"]
        first = stack.start_worker(env)
        with _stack.stage("worker A"):
            seen = asyncio.run(caught_up(stack.bootstrap, app_id, stack.partitions, timeout_s,
                                         first))
        span = seen["t_last"] - seen["t_first"]
        cpu = cpu_seconds(first.pid)
        rss = peak_rss_mb(first.pid)
        first.popen.kill()
        first.popen.wait()
        log_from = first.log_path.stat().st_size
        second = stack.start_worker(env)
        with _stack.stage("worker B restore"):
            restore_read = restored_log(second, stack.partitions, timeout_s, log_from)
            restore_s = time.monotonic() - second.started
        asyncio.run(_stack.produce(stack.bootstrap, _stack.TOPICS.calls, ends))
        ratios = {}
        for width in WIDTHS:
            rows = _stack.influx_wait(
                stack, f"SELECT sum(events) AS n FROM llm_window WHERE width = '{width}s' "
                f"AND prompt_id != '{START_MARKER}' AND prompt_id != '{END_MARKER}'",
                lambda rows: bool(rows) and rows[0]["n"] >= total, timeout_s=timeout_s)
            ratios[width] = (rows[0]["n"] if rows else 0) / total
        sizes = checkpoint_figures(stack.bootstrap, app_id, stack.partitions)
        second.stop()
    return {
        "series": count, "events": total, "records": len(records),
        "events_per_s": total / span, "timed_s": span, "rss_mb": rss,
        "worker_cpu_us_per_event": cpu / total * 1e6,
        "restore_s": restore_s, "restore_read_s": restore_read,
        "windows_counted_ratio": ratios[10], "windows_counted_ratio_60s": ratios[60],
        "checkpoint_record_bytes_max": sizes["largest"],
        "checkpoint_mb_per_s": sizes["written"] / 1e6 / span,
        "checkpoint_bytes_per_series": sizes["restored"] / count,
    }


def main() -> None:
    """Parse arguments, run every width, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="10,000 series, 5 s of calls (within about a minute)")
    parser.add_argument("--widths", type=int, nargs="*", help="numbers of series")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per stage")
    args = parser.parse_args()
    widths = args.widths or ([10_000] if args.quick else [1_000, 10_000, 100_000])
    _common.setup()
    span_s = 5.0 if args.quick else SPAN_S
    runs = {count: one_width(count, span_s, args.timeout) for count in widths}
    figures: dict[str, Any] = {"quick": args.quick, "span_s": span_s, "cpus": os.cpu_count()}
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
