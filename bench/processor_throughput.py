"""Call events per second that one stream-processor worker takes from the calls topic to closed
windows, against a bare aiokafka consumer that only deserialises the same records.

Set-up (not timed): a private Tansu and influxd; the calls topic (4 partitions) is pre-filled
with ``events`` call events built as the producer's sender builds them (EventBuilder from
simulated calls; 20 series with skewed shares, tokens, costs, TTFT, quality, ~2% errors), in
batch envelopes of 500 events of one series (lz4, as the sender), their start times spread over
240 s of event time that ended minutes ago. Before the data, each partition holds a one-event
*start marker* of its own series, 120 s earlier than the data; after the data, a one-event *end
marker*, 100 s after it.

Worker: the real ``promptprof worker`` (Faust; validation, every aggregate, windows [10, 60] s,
allowed lateness 30 s, checkpoints every 2 s, the InfluxDB sink on) is started once the topic is
full. The bench consumes the windows topic itself.

What is timed: from the arrival of the first start-marker window to the arrival of the window
that completes the data (the data's ``events`` summed over closed windows equals ``events`` for
every width). A start marker's windows close when the worker has handled the first data envelope
of its partition, so the clock starts after Faust's start-up, group join and table recovery, with
one data envelope handled; that envelope's events are left out of the count. The delays of the
windows-topic path (Faust producer, broker, our consumer) are at both ends and cancel.
``events_per_s = (events - 500) / (t_last_window - t_first_marker_window)``.
``startup_s`` = worker spawn to the first start-marker window. ``influx_done_s`` = from the last
window on the topic until InfluxDB's ``sum(events)`` for the 10 s windows equals ``events``
(polled every 100 ms). ``worker_cpu_busy`` = the worker's CPU seconds (all threads) / wall seconds
over the timed span (1.0 = one core); ``worker_cpu_us_per_event`` = its CPU time per event and
``worker_cpu_bound_events_per_s`` the rate that CPU cost allows on one free core. From the main
thread's schedstat (the event loop): ``worker_loop_running``, ``worker_loop_waiting_for_cpu``
(runnable but another process had the core: other load on the machine) and ``worker_loop_idle``
(blocked, waiting for records), as fractions of the timed span. ``loadavg_1m_*`` shows how busy
the (shared) machine was.

Baseline, same run, same records: an aiokafka consumer (no group, every partition assigned from
offset 0) that ``orjson.loads`` each record value and counts its events, timed from its first
record to its last; run once before the worker starts and once after it has stopped, the mean
is ``bare_consumer_events_per_s``. ``ratio_vs_bare = events_per_s / bare_consumer_events_per_s``.

Small envelopes (``events_per_s_small_envelopes``): the same measurement in a second private
stack, with the data records made as the real sender packs them for 20 producers taking 500
calls/s each with default settings (linger 50 ms), calls spread over 2,000 series
(:func:`_stack.sender_records`: the sender's Linger and Packer on a simulated clock; one columnar
envelope per partition and cycle); ``small_envelopes_events_per_record`` is their mean size. Their
event times span ``small_events / 10,000`` s. The first data record handled before the clock
starts is left out with its mean size.

``--py-spy FILE`` records the worker with py-spy over the timed span (raw collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common
import _stack
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

BATCH = 500
WIDTHS = [10, 60]
LATENESS_S = 30
SPAN_S = 240.0
START_MARKER = "bench-start-marker"
END_MARKER = "bench-end-marker"
TARGET = 150_000


SMALL_RATE = 20 * 500  # calls/s of the 20 simulated producers together


def build_records(
    events: int, seed: int = 5, small: bool = False
) -> tuple[list[_stack.Record], int, int]:
    """Markers and data envelopes (full ones, or as the sender packs them when ``small``);
    returns (records, data events, data start ns)."""
    span_s = events / SMALL_RATE if small else SPAN_S
    now = time.time_ns()
    data_start = now - int((span_s + 160) * _stack.NS)
    data_start -= data_start % (60 * _stack.NS)  # the same window alignment in every run
    records = _stack.marker_records(START_MARKER, data_start - 120 * _stack.NS, _stack.PARTITIONS)
    if small:
        records += _stack.sender_records(data_start, events, seed=seed)
    else:
        rng = random.Random(seed)
        times = _stack.poisson_times(rng, data_start, events / SPAN_S, events)
        factory = _stack.EventFactory(_stack.series_mix(20), seed)
        records += _stack.full_envelopes(factory.pooled(times, pool=60_000), BATCH, 10.0)
    end_ns = data_start + int((span_s + 100) * _stack.NS)
    records += _stack.marker_records(END_MARKER, end_ns, _stack.PARTITIONS)
    return records, events, data_start


async def bare_consumer(bootstrap: str, total_events: int, partitions: int) -> dict[str, float]:
    """Consume the calls topic from the start, orjson.loads each value, count events."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(_stack.TOPICS.calls, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        counted = records = 0
        t0 = None
        deadline = time.monotonic() + 300
        while counted < total_events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            if t0 is None and batches:
                t0 = time.perf_counter()
            for batch in batches.values():
                for record in batch:
                    doc = orjson.loads(record.value)
                    counted += doc["count"] if "count" in doc else len(doc["events"])
                    records += 1
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        if counted != total_events:
            _common.log("WARNING: bare consumer saw", counted=counted, expected=total_events)
        return {"events_per_s": counted / elapsed, "records": records, "s": elapsed}
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_sched(pid: int) -> tuple[float, float]:
    """Seconds the worker's main thread (its event loop) ran and waited for a CPU (schedstat)."""
    fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def start_py_spy(pid: int, out: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` on the worker (raw collapsed stacks), if py-spy is installed."""
    binary = Path(sys.executable).parent / "py-spy"
    if not binary.exists():
        _common.log("py-spy not installed: .venv/bin/pip install py-spy")
        return None
    argv = [
        str(binary),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "200",
        "--duration",
        str(int(seconds) + 1),
        "--output",
        out,
        "--nonblocking",
    ]
    return subprocess.Popen(argv, stdout=sys.stderr, stderr=sys.stderr)


async def watch_worker(
    stack: _stack.BenchStack,
    worker: _stack.WorkerProcess,
    total: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Follow the windows topic until every data event is in a closed window of every width."""
    watcher = _stack.WindowWatcher(stack.bootstrap)
    await watcher.start(stack.partitions)
    sums = dict.fromkeys(WIDTHS, 0)
    t_first = t_last = None
    cpu0 = tansu0 = 0.0
    sched0 = (0.0, 0.0)
    spy = None
    windows = 0
    deadline = time.monotonic() + args.timeout
    try:
        while min(sums.values()) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"windows hold {sums} of {total} events after {args.timeout}s")
            worker.check()
            for window in await watcher.poll(50):
                prompt = window["series"]["prompt_id"]
                if prompt == START_MARKER:
                    if t_first is None:
                        t_first = watcher.seen[-1][0]
                        cpu0 = cpu_seconds(worker.pid)
                        tansu0 = cpu_seconds(stack.tansu.pid or 0)
                        sched0 = main_thread_sched(worker.pid)
                        _common.log("first start-marker window", startup_s=t_first - worker.started)
                        if args.py_spy:
                            spy = start_py_spy(worker.pid, args.py_spy, total / 50_000)
                elif prompt != END_MARKER and window["width_s"] in sums:  # not the hourly rollup
                    sums[window["width_s"]] += window["events"]
                    windows += 1
        t_last = watcher.seen[-1][0]
        cpu1 = cpu_seconds(worker.pid)
        tansu1 = cpu_seconds(stack.tansu.pid or 0)
        sched1 = main_thread_sched(worker.pid)
    finally:
        await watcher.stop()
    if spy is not None:
        spy.wait(60)
    assert t_first is not None
    return {
        "t_first": t_first,
        "t_last": t_last,
        "cpu": cpu1 - cpu0,
        "windows": windows,
        "tansu_cpu": tansu1 - tansu0,
        "loop_run": sched1[0] - sched0[0],
        "loop_wait": sched1[1] - sched0[1],
    }


def run(
    args: argparse.Namespace, events: int, small: bool = False, durable: bool = False
) -> dict[str, Any]:
    """One measurement (full or sender-packed envelopes) in a stack of its own; the figures.

    ``durable`` runs Tansu on S3 storage over localbucket instead of memory."""
    load_before = os.getloadavg()[0]
    with _stack.BenchStack(durable=durable) as stack:
        with _stack.stage("building records"):
            records, total, _ = build_records(events, small=small)
        events_per_record = total / (len(records) - 2 * _stack.PARTITIONS)
        nbytes = sum(len(r.value) for r in records)
        _common.log("records", records=len(records), events=total, mb=round(nbytes / 1e6, 1))
        with _stack.stage("producing"):
            asyncio.run(_stack.produce(stack.bootstrap, _stack.TOPICS.calls, records))
        all_events = sum(r.events for r in records)
        with _stack.stage("bare consumer (before)"):
            bare1 = asyncio.run(bare_consumer(stack.bootstrap, all_events, stack.partitions))
        env = stack.worker_env(
            windows__widths_s=WIDTHS,
            windows__allowed_lateness_s=LATENESS_S,
            worker__checkpoint_interval_s=2,
            worker__idle_timeout_s=5,
            worker__sink_enabled="true",
        )
        worker = stack.start_worker(env)
        with _stack.stage("worker run"):
            try:
                seen = asyncio.run(watch_worker(stack, worker, total, args))
            except (RuntimeError, TimeoutError) as exc:
                if not small:
                    raise
                _common.log("small-envelope run failed", error=str(exc)[:2000])
                return {
                    "error": _reason(str(exc)),
                    "events_per_record": events_per_record,
                    "record_bytes_mean": nbytes / len(records),
                    "events": total,
                }
        span = seen["t_last"] - seen["t_first"]
        rows = _stack.influx_wait(
            stack,
            f"SELECT sum(events) AS n FROM llm_window WHERE width = '10s' "
            f"AND prompt_id != '{START_MARKER}' AND prompt_id != '{END_MARKER}'",
            lambda rows: bool(rows) and rows[0]["n"] == total,
            timeout_s=60.0,
        )
        influx_done = time.monotonic() - seen["t_last"]
        influx_events = rows[0]["n"] if rows else 0
        if influx_events != total:
            _common.log("WARNING: InfluxDB holds", events=influx_events, expected=total)
        worker.stop()
        with _stack.stage("bare consumer (after)"):
            bare2 = asyncio.run(bare_consumer(stack.bootstrap, all_events, stack.partitions))
    events_per_s = (total - (events_per_record if small else BATCH)) / span
    bare = (bare1["events_per_s"] + bare2["events_per_s"]) / 2
    return {
        "events_per_s": events_per_s,
        "bare_consumer_events_per_s": bare,
        "ratio_vs_bare": events_per_s / bare,
        "target_events_per_s": TARGET,
        "target_met": events_per_s >= TARGET,
        "records": len(records),
        "events": total,
        "events_per_record": events_per_record,
        "record_bytes_mean": nbytes / len(records),
        "timed_s": span,
        "startup_s": seen["t_first"] - worker.started,
        "worker_cpu_busy": seen["cpu"] / span,
        "worker_cpu_us_per_event": seen["cpu"] / total * 1e6,
        "worker_cpu_bound_events_per_s": total / seen["cpu"],
        "tansu_cpu_busy": seen["tansu_cpu"] / span,
        "worker_loop_running": seen["loop_run"] / span,
        "worker_loop_waiting_for_cpu": seen["loop_wait"] / span,
        "worker_loop_idle": 1 - (seen["loop_run"] + seen["loop_wait"]) / span,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
        "windows": seen["windows"],
        "influx_done_s": influx_done,
        "influx_events": influx_events,
        "bare_before_events_per_s": bare1["events_per_s"],
        "bare_after_events_per_s": bare2["events_per_s"],
        "bare_records_per_s": (bare1["records"] / bare1["s"] + bare2["records"] / bare2["s"]) / 2,
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (within 60 s)")
    parser.add_argument("--events", type=int, help="data events (default 3M, quick 600k)")
    parser.add_argument(
        "--small-events", type=int, help="data events of the small-envelope run (1M, quick 200k)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the worker")
    parser.add_argument("--py-spy", metavar="FILE", help="record the worker with py-spy")
    args = parser.parse_args()
    args.events = args.events or (600_000 if args.quick else 3_000_000)
    args.small_events = args.small_events or (200_000 if args.quick else 1_000_000)
    _common.setup()
    figures = run(args, args.events)
    small = run(args, args.small_events, small=True)
    _common.emit("processor_throughput", {"quick": args.quick, **figures, **_small(small, figures)})


def _reason(error: str) -> str:
    """The line of a worker's failure that names the error (the last one that does)."""
    lines = error.splitlines() or [""]
    named = [line for line in lines if "Error" in line]
    return (named or lines)[-1].strip()[:300]


def _small(small: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """The small-envelope figures (the worker's error instead of its rate when it failed)."""
    out = {
        "small_envelopes_events_per_record": small["events_per_record"],
        "small_envelopes_record_bytes_mean": small["record_bytes_mean"],
        "small_envelopes_events": small["events"],
    }
    if "error" in small:
        return {**out, "small_envelopes_error": small["error"]}
    return {
        **out,
        "events_per_s_small_envelopes": small["events_per_s"],
        "small_envelopes_worker_cpu_us_per_event": small["worker_cpu_us_per_event"],
        "ratio_small_vs_full_envelopes": small["events_per_s"] / full["events_per_s"],
    }


if __name__ == "__main__":
    main()
