"""Benchmark: what a window InfluxDB refuses costs the sink's write of one poll.

Set-up: a private influxd 1.x (Debian's 1.6.7 here) on free loopback ports, a database with a
1 h retention policy. One poll is ``--windows`` closed 10 s windows (default 2,000, the sink's
``max_poll_records``; distinct series, recent start times, one window in three with an error
point, so about 1.3 lines per window), rendered with the sink's encoder and written with the
sink's writer (:meth:`~promptprof_processor.sink.influx.RetryingWriter.write_finding_refused`
over :class:`~promptprof_processor.sink.influx.V1Writer`). A refused window is one whose start is
in 2023, beyond the retention: InfluxDB stores the rest of the request and answers 400
("points beyond retention policy"), and the sink bisects the request to find it.

Figures (median of ``--repeats`` polls, each of new windows so that no write overwrites another):
``clean_poll_ms`` (no refused window: one request), ``one_refused_poll_ms`` and
``one_refused_requests``, ``ten_refused_poll_ms`` and ``ten_refused_requests``, and
``ratio_one_refused_vs_clean`` (the refused poll's time over the clean poll's: a cost, lower is
better). ``*_refused_lines`` and ``*_windows_stored`` check the last poll of each kind: the lines
of the refused windows found (a refused window with an error point has two) and every other
window stored (counted with InfluxQL).

Usage: ``.venv/bin/python bench/sink_refused_writes.py [--quick]``; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

import _common

from promptprof_processor.ingest.validation import CallColumns, CallRecord, validate_events
from promptprof_processor.settings import NS_PER_S, InfluxSettings
from promptprof_processor.sink.influx import RetryingWriter, V1Writer
from promptprof_processor.sink.lineprotocol import WINDOW_MEASUREMENT, window_lines
from promptprof_processor.windows.figures import (
    CALL_FIELDS,
    Accumulator,
    SeriesTags,
    WindowAggregate,
)
from promptprof_tools.stack import InfluxDB, free_ports

DATABASE = "bench"
OLD_START_NS = 1_699_999_200 * NS_PER_S  # 2023: beyond the 1 h retention
_polls = itertools.count()


class CountingWriter(V1Writer):
    """The sink's v1 writer, counting requests."""

    requests = 0

    async def write(self, lines: list[str]) -> None:
        """Count, then write."""
        CountingWriter.requests += 1
        await super().write(lines)


def _accumulator(errors: int) -> Accumulator:
    """20 calls of one series, ``errors`` of them failed, validated as the worker does."""
    raw = [
        {"schema_version": 1, "event_id": f"e{i}", "start_time_unix_nano": 0,
         "service.name": "bench", "promptprof.prompt.id": "p", "promptprof.prompt.version": "v1",
         "gen_ai.request.model": "m", "promptprof.latency_ms": 100.0 + i,
         **({"promptprof.status": "error", "error.type": "RateLimitError"} if i < errors else {})}
        for i in range(20)
    ]
    records, _ = validate_events(raw)
    acc = Accumulator()
    acc.add_calls(CallColumns.of_records(cast(list[CallRecord], records), CALL_FIELDS))
    return acc


_CALLS = {0: _accumulator(0), 1: _accumulator(1)}


def closed_window(series: int, start_ns: int) -> WindowAggregate:
    """A window of 20 calls of one series (one series in three with one failed call)."""
    tags = SeriesTags(service="bench", prompt_id=f"p{series}", prompt_version="v1", model="m")
    acc = _CALLS[int(series % 3 == 0)]
    return acc.finish(tags, start_ns, start_ns + 10 * NS_PER_S, late_events=0)


def poll(windows: int, refused: int) -> tuple[list[str], int]:
    """The lines of one poll with ``refused`` windows InfluxDB will refuse, and its start."""
    start = (time.time_ns() // (10 * NS_PER_S) - 6 - next(_polls)) * 10 * NS_PER_S
    old = set(range(0, windows, max(1, windows // max(refused, 1)))[:refused])
    lines = [
        line
        for i in range(windows)
        for line in window_lines(closed_window(i, OLD_START_NS if i in old else start))
    ]
    return lines, start


async def timed_poll(writer: RetryingWriter, lines: list[str]) -> tuple[float, int, int]:
    """Write one poll: (ms, requests, refused lines)."""
    CountingWriter.requests = 0
    began = time.perf_counter()
    refused = await writer.write_finding_refused(lines)
    return (time.perf_counter() - began) * 1000, CountingWriter.requests, len(refused)


async def measure(server: InfluxDB, windows: int, repeats: int) -> dict[str, float | int]:
    settings = InfluxSettings(url=server.url, database=DATABASE)
    writer = RetryingWriter(CountingWriter(settings))
    figures: dict[str, float | int] = {"windows_per_poll": windows}
    try:
        for name, refused in (("clean", 0), ("one_refused", 1), ("ten_refused", 10)):
            runs = []
            for _ in range(repeats):
                lines, start = poll(windows, refused)
                runs.append((*await timed_poll(writer, lines), start))
            figures[f"{name}_poll_ms"] = statistics.median(ms for ms, _, _, _ in runs)
            figures[f"{name}_requests"] = max(requests for _, requests, _, _ in runs)
            figures["lines_per_poll"] = len(lines)
            _, _, found, last_start = runs[-1]
            if refused:
                figures[f"{name}_refused_lines"] = found
                figures[f"{name}_windows_stored"] = stored(server, last_start)
    finally:
        await writer.close()
    figures["ratio_one_refused_vs_clean"] = (
        float(figures["one_refused_poll_ms"]) / float(figures["clean_poll_ms"])
    )
    return figures


def stored(server: InfluxDB, start_ns: int) -> int:
    rows = server.rows(
        f'SELECT count("events") FROM "{WINDOW_MEASUREMENT}" WHERE time = {start_ns}', DATABASE
    )
    return int(rows[0]["count"]) if rows else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer polls")
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    _common.setup()
    repeats = args.repeats or (3 if args.quick else 15)
    with tempfile.TemporaryDirectory(prefix="promptprof-bench-") as tmp:
        port, rpc = free_ports(2)
        server = InfluxDB(port, rpc, Path(tmp), database=DATABASE)
        server.start(timeout_s=30.0)
        try:
            server.query(
                f'CREATE RETENTION POLICY "hour" ON "{DATABASE}" DURATION 1h REPLICATION 1 DEFAULT'
            )
            _common.log("influxd up", url=server.url)
            figures = asyncio.run(measure(server, args.windows, repeats))
        finally:
            server.stop()
    _common.emit("sink_refused_writes", figures)


if __name__ == "__main__":
    main()
