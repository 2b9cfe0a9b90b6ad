"""Points and bytes the pipeline writes to InfluxDB per million calls, against storing each call.

Set-up: a private Tansu and influxd and the real ``promptprof worker`` (default windows [10, 60]
s, allowed lateness 30 s, idle timeout 1 s, the sink on). ``--calls`` call events (default 200k,
quick 50k) are built as the producer's sender builds them (EventBuilder from simulated calls; 20
series with skewed shares, about 2% errors of three types) with Poisson start times at
``--rate`` calls per second (default 200) of event time, all in the past, and published in
envelopes of up to 500 events of one series (each spanning at most 2 s of event time). The worker
aggregates them; once the data are over, the idle timeout closes the last windows.

Pipeline figures: every closed window is read back from the windows topic and rendered with
:func:`promptprof_processor.sink.lineprotocol.render_windows`, the exact request body the sink sends
to ``/write`` (one ``llm_window`` point per window plus one ``llm_window_errors`` point per error
type seen): ``points`` and ``bytes`` are its lines and UTF-8 bytes. These are line-protocol bytes
(what is sent to InfluxDB and what hosted InfluxDB bills as data in), not bytes on disk. InfluxDB
is then queried to check that it holds the same number of points (``influx_points``).

Raw figures: each call stored as its own point, rendered with the same encoder: measurement
``llm_call``, the window's tags less ``width`` (service, prompt_id, prompt_version, model),
fields latency_ms, ttft_ms, input_tokens (int), output_tokens (int), cost_usd, error (bool),
error_type (string, failed calls), quality_score and event_id (string, so that two calls of one
series in the same nanosecond stay two points), timestamp = the call's start. Every call of the
run is rendered (not one sample), so ``raw_bytes`` is exact for this mix.

Disk figures: influxd runs here with ``cache-snapshot-write-cold-duration`` and
``compact-full-write-cold-duration`` at 1 s, so one second without writes moves a shard's cache
to TSM files and then fully compacts them (the defaults, 10 min and 4 h, do the same later).
The raw points are written to a second database (``raw``) in the same influxd. Once both
databases' WAL folders are empty and no compaction file is in progress, and their sizes have
stayed the same for 3 s, ``disk_bytes`` and ``raw_disk_bytes`` are the bytes allocated on disk
(``st_blocks``) to each database's files under the data and WAL folders: its TSM files and its
series file (eight sparse 4 MiB segments, a fixed cost of a few dozen KiB whatever the volume;
the default in-memory index writes nothing else); ``tsm_bytes`` and ``raw_tsm_bytes`` are the
sizes of the TSM files alone. These are bytes on disk after a full compaction, not request
bytes.

Long ranges (:mod:`_long_range`, in the same influxd after the above): 30 days of windows of
20 series written straight into a database of their own as the stream leaves them (10 s windows
for 7 days, 60 s and hourly ones for 30), then every overview panel queried over 30 days and
over 1 hour: ``query_ms_30d_overview`` and ``query_ms_1h_overview`` are the heaviest panel's
times (the slowest over 30 days), ``query_ratio_30d_vs_1h`` their ratio (target <= 3).
``--ranges-only`` runs this part alone. The worker above writes no hourly rollups
(``rollup_widths_s=[]``), so that the per-call figures stay those of the 10 s and 60 s windows: an
hourly rollup adds one point per series per hour (480 a day for 20 series).

All are scaled to a million calls (``x 1e6 / calls``). The pipeline's figures grow with the
number of series and windows, not with calls: at ``rate`` calls/s they are roughly
``series x (1/10 + 1/60) / rate`` points per call, so they shrink as the rate grows.
``ratio_points = raw_points / points``; ``ratio_bytes = raw_bytes / bytes`` (request bytes);
``ratio_disk_bytes = raw_disk_bytes / disk_bytes``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import _long_range
import _stack

from promptprof_processor.sink.lineprotocol import encode_line, render_windows
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_tools.stack.influxdb import InfluxDB, set_toml_option

NS = _stack.NS
WIDTHS = [10, 60]
CALL_MEASUREMENT = "llm_call"
RAW_DATABASE = "raw"
RAW_LINES_PER_WRITE = 5_000
COLD_AFTER = '"1s"'
STABLE_FOR_S = 3.0


class CompactingInfluxDB(InfluxDB):
    """influxd that snapshots a shard's cache and fully compacts it after 1 s without writes."""

    def _configure(self, text: str) -> str:
        text = super()._configure(text)
        for key in ("cache-snapshot-write-cold-duration", "compact-full-write-cold-duration"):
            text = set_toml_option(text, "data", key, COLD_AFTER)
        return text


@dataclass
class DiskUse:
    """What one database occupies on disk."""

    allocated: int = 0
    tsm: int = 0
    wal: int = 0
    in_progress: bool = False

    def add(self, path: Path, wal: bool) -> None:
        """Count one file: its allocated blocks, and its size if it is a TSM or WAL file."""
        info = path.stat()
        self.allocated += info.st_blocks * 512
        self.tsm += info.st_size if path.suffix == ".tsm" else 0
        self.wal += info.st_size if wal else 0
        self.in_progress |= path.name.endswith(".tmp")

    @property
    def settled(self) -> bool:
        """No write left in the WAL and no compaction file in progress."""
        return self.wal == 0 and not self.in_progress


def disk_use(influx: InfluxDB, database: str) -> DiskUse:
    """A database's files under influxd's data and WAL folders."""
    use = DiskUse()
    for folder, wal in (("data", False), ("wal", True)):
        for path in (influx.data_dir / folder / database).rglob("*"):
            if path.is_file():
                use.add(path, wal)
    return use


def compacted_disk_use(influx: InfluxDB, timeout_s: float,
                       databases: tuple[str, ...] = ()) -> dict[str, DiskUse]:
    """Each database's disk use (default: the pipeline's and the raw one) once settled and
    unchanged for :data:`STABLE_FOR_S`."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, DiskUse] = {}
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = {db: disk_use(influx, db) for db in databases or (influx.database, RAW_DATABASE)}
        if now != last or not all(use.settled for use in now.values()):
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= STABLE_FOR_S:
            return now
        time.sleep(0.5)
    _common.log("WARNING: InfluxDB files still changing", use=last)
    return last


def write_raw(influx: InfluxDB, lines: list[str]) -> None:
    """Store each call as its own point in the ``raw`` database."""
    influx.create_database(RAW_DATABASE)
    for start in range(0, len(lines), RAW_LINES_PER_WRITE):
        influx.write(lines[start : start + RAW_LINES_PER_WRITE], database=RAW_DATABASE)


def raw_line(event: dict[str, Any]) -> str:
    """The line-protocol point of one call stored on its own."""
    tags = {
        "service": event["service.name"],
        "prompt_id": event["promptprof.prompt.id"],
        "prompt_version": event["promptprof.prompt.version"],
        "model": event["gen_ai.request.model"],
    }
    failed = event.get("promptprof.status") == "error"
    fields = {
        "latency_ms": float(event["promptprof.latency_ms"]),
        "ttft_ms": event.get("gen_ai.server.time_to_first_token"),
        "input_tokens": event.get("gen_ai.usage.input_tokens"),
        "output_tokens": event.get("gen_ai.usage.output_tokens"),
        "cost_usd": event.get("promptprof.cost.usd"),
        "error": failed,
        "error_type": event.get("error.type") if failed else None,
        "quality_score": event.get("promptprof.quality.score"),
        "event_id": event["event_id"],
    }
    return encode_line(CALL_MEASUREMENT, tags, fields, event["start_time_unix_nano"])


async def collect_windows(
    stack: _stack.BenchStack, worker: _stack.WorkerProcess, calls: int, timeout_s: float
) -> list[bytes]:
    """Raw window records from the windows topic, once every call is in a window of each width."""
    watcher = _stack.WindowWatcher(stack.bootstrap)
    await watcher.start(stack.partitions)
    sums = dict.fromkeys(WIDTHS, 0)
    deadline = time.monotonic() + timeout_s
    try:
        while min(sums.values()) < calls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"windows hold {sums} of {calls} calls after {timeout_s}s")
            worker.check()
            for window in await watcher.poll(100):
                if window["width_s"] in sums:  # not the hourly rollup
                    sums[window["width_s"]] += window["events"]
        await watcher.poll(500)  # nothing more is expected; catch any straggler
        return watcher.raw
    finally:
        await watcher.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the figures."""
    rng = random.Random(23)
    span_s = args.calls / args.rate
    start_ns = time.time_ns() - int((span_s + 120) * NS)
    start_ns -= start_ns % (60 * NS)  # the same window alignment in every run
    with _stack.stage(f"building {args.calls} calls ({span_s:.0f} s of event time)"):
        series = _stack.series_mix(args.series)
        factory = _stack.EventFactory(series, seed=29)
        events = factory.events(_stack.poisson_times(rng, start_ns, args.rate, args.calls))
        records = _stack.full_envelopes(_stack.with_keys(events), 500, max_age_s=2.0)
        raw_lines = [raw_line(e) for e in events]
        raw = "\n".join(raw_lines).encode()
    stack = _compacting_stack()
    with stack:
        env = stack.worker_env(
            windows__widths_s=WIDTHS,
            windows__rollup_widths_s=[],
            windows__allowed_lateness_s=30,
            worker__idle_timeout_s=1,
            worker__sink_enabled="true",
        )
        worker = stack.start_worker(env)
        with _stack.stage("producing"):
            asyncio.run(_stack.produce(stack.bootstrap, _stack.TOPICS.calls, records))
        with _stack.stage("worker aggregating"):
            values = asyncio.run(collect_windows(stack, worker, len(events), args.timeout))
        windows = [WindowAggregate.from_bytes(v) for v in values]
        body = render_windows(windows)
        points = body.count(b"\n") + 1 if body else 0
        error_points = sum(len(w.errors_by_type) for w in windows)

        def influx_count(rows: list[dict[str, Any]]) -> int:
            return sum(int(r.get("n") or 0) for r in rows)

        q = (
            "SELECT count(events) AS n FROM llm_window; "
            "SELECT count(errors) AS n FROM llm_window_errors"
        )
        rows = _stack.influx_wait(
            stack, q, lambda rows: influx_count(rows) >= points, timeout_s=60.0
        )
        influx_points = influx_count(rows)
        if influx_points != points:
            _common.log("WARNING: InfluxDB point count differs", influx=influx_points, sent=points)
        with _stack.stage("raw points written, waiting for the compactions"):
            write_raw(stack.influx, raw_lines)
            disk = compacted_disk_use(stack.influx, args.timeout)
            ours, theirs = disk[stack.influx.database], disk[RAW_DATABASE]
        ranges = _long_range.figures(stack.influx, _series_tags(series), _settle)
    per_million = 1e6 / len(events)
    raw_points = len(events)
    return {
        "points_per_million_calls": points * per_million,
        "bytes_per_million_calls": len(body) * per_million,
        "raw_points_per_million_calls": raw_points * per_million,
        "raw_bytes_per_million_calls": len(raw) * per_million,
        "ratio_points": raw_points / points,
        "ratio_bytes": len(raw) / len(body),
        "disk_bytes_per_million_calls": ours.allocated * per_million,
        "raw_disk_bytes_per_million_calls": theirs.allocated * per_million,
        "ratio_disk_bytes": theirs.allocated / max(ours.allocated, 1),
        "tsm_bytes_per_million_calls": ours.tsm * per_million,
        "raw_tsm_bytes_per_million_calls": theirs.tsm * per_million,
        "ratio_tsm_bytes": theirs.tsm / max(ours.tsm, 1),
        "bytes_per_point": len(body) / points,
        "raw_bytes_per_point": len(raw) / raw_points,
        "calls": len(events),
        "rate_calls_per_s": args.rate,
        "event_time_s": span_s,
        "series": len(series),
        "windows": len(windows),
        "points": points,
        "error_points": error_points,
        "influx_points": influx_points,
        "records": len(records),
        "loadavg_1m": os.getloadavg()[0],
        **ranges,
    }


def _series_tags(series: list[_stack.SeriesSpec]) -> list[tuple[str, str, str]]:
    """(prompt id, version, model) of each series of the mix."""
    return [(s.spec.prompt_id, s.spec.version, s.spec.model) for s in series]


def run_ranges() -> dict[str, Any]:
    """The long-range part alone, on a private influxd."""
    stack = _compacting_stack()
    with stack:
        return _long_range.figures(stack.influx, _series_tags(_stack.series_mix(20)), _settle)


def _settle(influx: InfluxDB, database: str) -> None:
    """Wait until ``database`` is compacted and its files stay the same."""
    compacted_disk_use(influx, 600.0, (database,))


def _compacting_stack() -> _stack.BenchStack:
    """A bench stack whose influxd is a :class:`CompactingInfluxDB`."""
    stack = _stack.BenchStack()
    influx = stack.influx
    stack.influx = CompactingInfluxDB(influx.port, influx.rpc_port, influx.data_dir)
    return stack


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (within 60 s)")
    parser.add_argument("--calls", type=int, help="calls (default 200k, quick 50k)")
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--series", type=int, default=20, help="prompt/version/model series")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the worker")
    parser.add_argument("--ranges-only", action="store_true",
                        help="only the 30-day against 1-hour query figures")
    args = parser.parse_args()
    args.calls = args.calls or (50_000 if args.quick else 200_000)
    _common.setup()
    figures = run_ranges() if args.ranges_only else run(args)
    _common.emit("storage", {"quick": args.quick, **figures})


if __name__ == "__main__":
    main()
