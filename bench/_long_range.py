"""How long the overview dashboard's panels take over 30 days against over 1 hour.

30 days of windows of 20 series are written straight into a real influxd, as the stream and the
default retention leave them (no traffic is run): 10 s windows for the last 7 days, 60 s windows
and the hourly rollups for all 30 days, up to now. Each point has the tags of ``llm_window`` and
the fields the overview reads (events, calls, errors, error rate, latency and TTFT p50/p90/p95/
p99/max, token and cost sums, quality mean; values drawn at random), about 480 bytes of line
protocol. Once influxd has moved them out of its WAL, every query of every overview panel runs as
Grafana would send it (``$timeFilter`` as ``time >= FROMms and time <= TOms``, ``$__range_s``
the range, every service selected), over the last 30 days and the last hour. A panel's time is
the sum of its queries' (median of :data:`REPEATS` runs after one warm-up); the heaviest panel is
the slowest over 30 days. ``query_ms_30d_overview`` and ``query_ms_1h_overview`` are that panel's
times, ``query_ratio_30d_vs_1h`` their ratio.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import _stack
import httpx

from promptprof_processor.dashboards.overview import overview
from promptprof_tools.stack.influxdb import InfluxDB

NS = 1_000_000_000
DATABASE = "ranges"
SERVICE = "bench-service"
DAY_S = 86_400
# width (s) -> days of it kept, as the default retention keeps them over a 30-day range
KEPT_DAYS = {10: 7, 60: 30, 3600: 30}
RANGES_S = {"30d": 30 * DAY_S, "1h": 3600}
LINES_PER_WRITE = 10_000
REPEATS = 5
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _fields(rng: random.Random, width_s: int) -> str:
    calls = max(1, int(rng.expovariate(1 / (2.0 * width_s))))
    p50 = rng.uniform(200, 900)
    latency = ",".join(f"latency_{p}_ms={p50 * f:.3f}" for p, f in
                       (("p50", 1), ("p90", 1.8), ("p95", 2.2), ("p99", 3.1), ("max", 4.0)))
    ttft = ",".join(f"ttft_{p}_ms={p50 * f / 4:.3f}" for p, f in
                    (("p50", 1), ("p90", 1.8), ("p95", 2.2), ("p99", 3.1), ("max", 4.0)))
    errors = float(sum(rng.random() < 0.02 for _ in range(min(calls, 50))))
    return (f"events={calls}i,calls={calls}.0,errors={errors},error_rate={errors / calls},"
            f"late_events=0i,{latency},{ttft},ttft_calls={calls}.0,"
            f"input_tokens_sum={calls * 420.0},input_tokens_calls={calls}.0,"
            f"output_tokens_sum={calls * 180.0},output_tokens_calls={calls}.0,"
            f"cost_usd_sum={calls * 0.0021},cost_known_calls={calls}.0,"
            f"quality_mean={rng.uniform(0.6, 0.95):.4f},quality_scored={calls}.0")


def window_lines(series: list[tuple[str, str, str]], now_s: int, seed: int = 31) -> list[str]:
    """The ``llm_window`` lines of every series and width up to ``now_s``."""
    rng = random.Random(seed)
    lines = []
    for width, days in KEPT_DAYS.items():
        end = now_s - now_s % width
        for prompt, version, model in series:
            tags = (f"llm_window,model={model},prompt_id={prompt},prompt_version={version},"
                    f"service={SERVICE},width={width}s")
            lines.extend(f"{tags} {_fields(rng, width)} {start * NS}"
                         for start in range(end - days * DAY_S, end, width))
    return lines


def write(influx: InfluxDB, lines: list[str], settle: Callable[[InfluxDB, str], None]) -> None:
    """Write the lines into :data:`DATABASE`, then ``settle`` waits until influxd has moved them
    to TSM files and compacted them (as 30 days of windows are)."""
    influx.create_database(DATABASE)
    for start in range(0, len(lines), LINES_PER_WRITE):
        influx.write(lines[start : start + LINES_PER_WRITE], database=DATABASE)
    settle(influx, DATABASE)


def panel_queries(range_s: int, now_ms: int) -> dict[str, list[str]]:
    """Every overview panel's queries as Grafana sends them over the last ``range_s``."""
    values = {"timeFilter": f"time >= {now_ms - range_s * 1000}ms and time <= {now_ms}ms",
              "__range_s": str(range_s), "service": f"({SERVICE})", "budget_usd": "1000"}

    def fill(query: str) -> str:
        return VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], query)

    return {panel["title"] + f" #{panel['id']}": [fill(t["query"]) for t in panel["targets"]]
            for panel in overview()["panels"] if panel.get("targets")}


def _timed(client: httpx.Client, queries: list[str]) -> float:
    started = time.perf_counter()
    for query in queries:
        response = client.get("/query", params={"db": DATABASE, "q": query, "epoch": "ms"})
        response.raise_for_status()
        assert "error" not in response.text[:200], response.text[:300]
    return (time.perf_counter() - started) * 1000


def panel_ms(influx: InfluxDB, queries: dict[str, list[str]]) -> dict[str, float]:
    """Median milliseconds per panel."""
    with httpx.Client(base_url=influx.url, timeout=120) as client:
        for panel in queries.values():
            _timed(client, panel)  # warm-up
        return {name: statistics.median(_timed(client, panel) for _ in range(REPEATS))
                for name, panel in queries.items()}


def figures(influx: InfluxDB, series: list[tuple[str, str, str]],
            settle: Callable[[InfluxDB, str], None]) -> dict[str, Any]:
    """Write the 30 days, time every panel over both ranges, return the figures."""
    now_s = int(time.time())
    with _stack.stage("30 days of windows written into influxd and compacted"):
        lines = window_lines(series, now_s)
        write(influx, lines, settle)
    now_ms = now_s * 1000 + 1000
    times = {label: panel_ms(influx, panel_queries(range_s, now_ms))
             for label, range_s in RANGES_S.items()}
    heaviest = max(times["30d"], key=times["30d"].__getitem__)
    return {
        "query_ms_30d_overview": times["30d"][heaviest],
        "query_ms_1h_overview": times["1h"][heaviest],
        "query_ratio_30d_vs_1h": times["30d"][heaviest] / times["1h"][heaviest],
        "query_heaviest_panel": heaviest,
        "query_ms_30d_overview_all_panels": sum(times["30d"].values()),
        "query_ms_1h_overview_all_panels": sum(times["1h"].values()),
        "long_range_points": len(lines),
    }
