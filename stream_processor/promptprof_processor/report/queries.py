"""What the report reads from InfluxDB: time series per prompt, the quality/cost points, the
alerts and the summary table, all for one window width over the last ``since`` seconds.

Window figures are read at a single width (so no call is counted twice; over 30 days the hourly
rollups): counts and sums are bucketed in InfluxDB and add up exactly. Percentiles cannot be
merged from window figures, so they are never averaged: the latency lines are each window's own
percentiles, one line per series (prompt, version, model), and the summary shows the highest
window percentile of each series (each a percentile of one window's calls, 1% relative error).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from promptprof_processor.dashboards.widths import WindowLayout
from promptprof_processor.report.influxql import (
    ALERT_MEASUREMENT,
    WINDOW_MEASUREMENT,
    InfluxQLClient,
    Row,
)
from promptprof_processor.settings import RETENTION_POLICY_PREFIX

UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_WINDOWS_PER_SERIES = 2000
TARGET_POINTS = 120
MAX_ALERTS = 500

# metric -> InfluxQL expression; {bucket} is the bucket width in seconds
TIME_SERIES = {
    "error_rate": 'sum("errors") / sum("calls")',
    "input_tokens": 'sum("input_tokens_sum") * 60 / {bucket}',
    "output_tokens": 'sum("output_tokens_sum") * 60 / {bucket}',
    "cost": 'sum("cost_usd_sum") * 3600 / {bucket}',
}
QUALITY_COST = {
    "cost_per_call": 'sum("cost_usd_sum") / sum("calls")',
    "quality": 'mean("quality_mean")',
    "calls": 'sum("calls")',
}
# metric -> the field each window holds it in; plotted as is, one line per series
PERCENTILES = {"p50": "latency_p50_ms", "p95": "latency_p95_ms", "p99": "latency_p99_ms"}
SUMMARY = {
    "calls": 'sum("calls")',
    "error_rate": 'sum("errors") / sum("calls")',
    "p50_worst": 'max("latency_p50_ms")',
    "p95_worst": 'max("latency_p95_ms")',
    "p99_worst": 'max("latency_p99_ms")',
    "ttft_p50_worst": 'max("ttft_p50_ms")',
    "input_tokens": 'sum("input_tokens_sum") / sum("input_tokens_calls")',
    "output_tokens": 'sum("output_tokens_sum") / sum("output_tokens_calls")',
    "cost": 'sum("cost_usd_sum")',
    "quality": 'mean("quality_mean")',
}
ALERT_COLUMNS = ("prompt_id", "prompt_version", "model", "rule", "severity", "state",
                 "observed", "baseline", "threshold", "message")
SERIES_TAGS = ("service", "prompt_id", "prompt_version", "model")
POLICY_NAME = re.compile(rf"{RETENTION_POLICY_PREFIX}(\d+)s")


def parse_since(text: str) -> int:
    """Seconds in a duration such as ``90s``, ``30m``, ``1h``, ``2d``, ``1w`` or ``1h30m``."""
    parts = re.findall(r"(\d+)([smhdw])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 2d)")
    seconds = sum(int(n) * UNITS_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"the duration {text!r} must be positive")
    return seconds


@dataclass(frozen=True)
class Scope:
    """What a report covers: the last ``since_s`` seconds, windows of one width, in buckets.

    ``first_ms`` and ``last_ms`` are the first and last window starts found in that range.
    """

    since_s: int
    width: str
    bucket_s: int
    first_ms: int
    last_ms: int
    policies: Mapping[int, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """Where the windows of the width are (``"llm_window"``, or in its retention policy)."""
        return WindowLayout((width_seconds(self.width),), self.policies).source(
            WINDOW_MEASUREMENT, width_seconds(self.width))

    @property
    def time_filter(self) -> str:
        """The InfluxQL time condition."""
        return f"time > now() - {self.since_s}s"


def width_seconds(width: str) -> int:
    """``"10s"`` -> 10."""
    return int(width.rstrip("s"))


def choose_scope(widths: list[str], since_s: int, first_ms: int, last_ms: int,
                 policies: Mapping[int, str] | None = None) -> Scope | None:
    """The finest width that keeps a series under :data:`MAX_WINDOWS_PER_SERIES` windows over
    the span of the data (else the widest), and a bucket of whole windows giving about
    :data:`TARGET_POINTS` points over that span."""
    if not widths:
        return None
    ordered = sorted(widths, key=width_seconds)
    span_s = max(1.0, (last_ms - first_ms) / 1000)
    fitting = [w for w in ordered if span_s / width_seconds(w) <= MAX_WINDOWS_PER_SERIES]
    width = fitting[0] if fitting else ordered[-1]
    seconds = width_seconds(width)
    bucket = max(1, math.ceil(span_s / TARGET_POINTS / seconds)) * seconds
    return Scope(since_s, width, bucket, first_ms, last_ms, policies or {})


@dataclass
class Points:
    """One line of a chart; times in epoch milliseconds (UTC)."""

    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class ReportData:
    """Everything a report shows."""

    scope: Scope | None
    generated_at: datetime
    series: dict[str, dict[str, Points]] = field(default_factory=dict)
    quality_cost: list[Row] = field(default_factory=list)
    alerts: list[Row] = field(default_factory=list)
    summary: list[Row] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        """Every prompt id in the summary, sorted."""
        return sorted({str(r["prompt_id"]) for r in self.summary})


def _select(columns: dict[str, str], bucket_s: int = 0) -> str:
    return ", ".join(f"{expr.format(bucket=bucket_s)} AS {name}" for name, expr in columns.items())


def _windows(scope: Scope, columns: dict[str, str], group_by: str) -> str:
    return (f"SELECT {_select(columns, scope.bucket_s)} FROM {scope.source} "
            f"WHERE \"width\" = '{scope.width}' AND {scope.time_filter} GROUP BY {group_by}")


def time_series(client: InfluxQLClient, scope: Scope) -> dict[str, dict[str, Points]]:
    """metric -> line -> points: sums per prompt id, one bucket per point (empty buckets left
    out); percentiles per series (``prompt version model``), one window per point."""
    query = _windows(scope, TIME_SERIES, f'time({scope.bucket_s}s), "prompt_id" fill(none)')
    out: dict[str, dict[str, Points]] = {name: {} for name in (*TIME_SERIES, *PERCENTILES)}
    for row in client.rows(query):
        _add_point(out, row, TIME_SERIES, row["prompt_id"])
    fields = {name: f'"{field}"' for name, field in PERCENTILES.items()}
    group = ", ".join(f'"{tag}"' for tag in SERIES_TAGS[1:])
    for row in client.rows(_windows(scope, fields, group)):
        _add_point(out, row, PERCENTILES, series_label(row))
    return out


def series_label(row: Row) -> str:
    """A series' line name: ``prompt version model``."""
    return " ".join(str(row[tag]) for tag in SERIES_TAGS[1:])


def _add_point(out: dict[str, dict[str, Points]], row: Row, metrics: dict[str, str],
               line: str) -> None:
    for name in metrics:
        if row.get(name) is not None:
            points = out[name].setdefault(line, Points())
            points.times.append(int(row["time"]))
            points.values.append(float(row[name]))


def quality_cost(client: InfluxQLClient, scope: Scope) -> list[Row]:
    """Per prompt version: cost per call, mean quality and calls (versions with both only)."""
    rows = client.rows(_windows(scope, QUALITY_COST, '"prompt_id", "prompt_version"'))
    return [r for r in rows if r.get("quality") is not None and r.get("cost_per_call") is not None]


def summary(client: InfluxQLClient, scope: Scope) -> list[Row]:
    """Per series (service, prompt, version, model): the figures of :data:`SUMMARY`, costliest
    first."""
    group = ", ".join(f'"{tag}"' for tag in SERIES_TAGS)
    rows = client.rows(_windows(scope, SUMMARY, group))
    return sorted(rows, key=lambda r: (-(r.get("cost") or 0.0), r["prompt_id"]))


def alerts(client: InfluxQLClient, scope: Scope) -> list[Row]:
    """The newest alerts of ``llm_alert`` (none when the measurement does not exist)."""
    columns = ", ".join(f'"{c}"' for c in ALERT_COLUMNS)
    query = (f'SELECT {columns} FROM "{ALERT_MEASUREMENT}" WHERE {scope.time_filter} '
             f"ORDER BY time DESC LIMIT {MAX_ALERTS}")
    return client.rows(query)


def policies(client: InfluxQLClient) -> dict[int, str]:
    """Width -> retention policy, of the policies that retention per width made (none when
    every width is in the default policy)."""
    rows = client.rows(f'SHOW RETENTION POLICIES ON "{client.settings.database}"')
    found = (POLICY_NAME.fullmatch(str(r["name"])) for r in rows)
    return {int(m.group(1)): m.group(0) for m in found if m}


def widths(client: InfluxQLClient, layout: WindowLayout) -> list[str]:
    """The window widths in InfluxDB (``SHOW TAG VALUES`` of every source)."""
    rows = client.rows(f"SHOW TAG VALUES FROM {layout.source(WINDOW_MEASUREMENT)} "
                       'WITH KEY = "width"')
    return sorted({str(r["value"]) for r in rows}, key=width_seconds)


def data_span(client: InfluxQLClient, since_s: int,
              layout: WindowLayout) -> tuple[int, int] | None:
    """The first and last window start (epoch ms) in the range, of any width."""
    found: list[int] = []
    for selector in ("first", "last"):
        rows = client.rows(f'SELECT {selector}("calls") FROM {layout.source(WINDOW_MEASUREMENT)} '
                           f"WHERE time > now() - {since_s}s")
        found.extend(int(r["time"]) for r in rows)
    return (min(found), max(found)) if found else None


def fetch(client: InfluxQLClient, since_s: int) -> ReportData:
    """Read everything the report shows."""
    now = datetime.now(UTC)
    found = policies(client)
    layout = WindowLayout(tuple(found), found)
    span = data_span(client, since_s, layout)
    scope = choose_scope(widths(client, layout), since_s, *span, found) if span else None
    if scope is None:
        return ReportData(scope=None, generated_at=now)
    return ReportData(
        scope=scope, generated_at=now, series=time_series(client, scope),
        quality_cost=quality_cost(client, scope), alerts=alerts(client, scope),
        summary=summary(client, scope),
    )
