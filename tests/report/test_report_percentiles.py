"""The report's percentiles are percentiles of the calls behind them (the pipeline-filled
database; the calls read back from the calls topic), and 30 days read the hourly rollups."""

from __future__ import annotations

import time

import pytest
from dashboards.filled import Call, FilledDatabase
from dashboards.test_queries import VALUE_OF, exact
from processor.factories import within_sketch_error

from promptprof import load_settings
from promptprof_processor.dashboards.widths import WindowLayout
from promptprof_processor.report.influxql import InfluxQLClient
from promptprof_processor.report.queries import PERCENTILES, choose_scope, fetch, width_seconds
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.units import NS_PER_S

pytestmark = pytest.mark.integration
MS_PER_S = 1000


def test_every_report_percentile_is_one_of_the_calls_behind_it(
    deployment: tuple[FilledDatabase, WindowLayout],
) -> None:
    filled, _ = deployment  # every width in the default policy, or each in its own policy
    settings = load_settings(
        cls=ProcessorSettings,
        influx={"url": filled.influx.url, "api": "v1", "database": filled.database})
    first = min(c.start_ns for c in filled.calls)
    with InfluxQLClient(settings.influx) as client:
        data = fetch(client, int(time.time() - first / NS_PER_S) + 60)
    assert data.scope is not None
    width_ns = width_seconds(data.scope.width) * NS_PER_S
    by_series: dict[str, list[Call]] = {}
    for call in filled.calls:
        by_series.setdefault(f"{call.prompt_id} {call.prompt_version} {call.model}",
                             []).append(call)
    checked = 0
    for name in PERCENTILES:
        for line, points in data.series[name].items():
            for at_ms, value in zip(points.times, points.values, strict=True):
                start = at_ms * (NS_PER_S // MS_PER_S)
                calls = [c for c in by_series[line] if start <= c.start_ns < start + width_ns]
                expected = exact(calls, "latency", int(name[1:]))
                assert within_sketch_error(value, expected), (name, line, at_ms, expected)
                checked += 1
    assert checked >= 30
    for row in data.summary:
        line = f"{row['prompt_id']} {row['prompt_version']} {row['model']}"
        windows: dict[int, list[Call]] = {}
        for call in by_series[line]:
            windows.setdefault(call.start_ns - call.start_ns % width_ns, []).append(call)
        worst = max(exact(calls, "latency", 95) for calls in windows.values()
                    if any(VALUE_OF["latency"](c) is not None for c in calls))
        assert within_sketch_error(row["p95_worst"], worst), (line, worst)


def test_a_30_day_report_reads_the_hourly_rollups() -> None:
    month_s = 30 * 86_400
    scope = choose_scope(["10s", "60s", "3600s"], month_s, 0, month_s * MS_PER_S)
    assert scope is not None and scope.width == "3600s"
