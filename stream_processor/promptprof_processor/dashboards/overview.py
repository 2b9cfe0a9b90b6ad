"""The overview dashboard: traffic, errors, latency, tokens, cost and quality of every prompt.

Window figures come from ``llm_window`` at one window width, chosen from the time range
(:mod:`~promptprof_processor.dashboards.widths`), so calls are never counted twice across widths
and 30 days read hourly windows. Percentiles are never averaged: a percentile panel draws each
window's own percentile, one line per series (prompt, version, model).
"""

from __future__ import annotations

from collections.abc import Sequence

from promptprof_processor.dashboards.model import (
    JSON,
    Layout,
    annotation,
    dashboard,
    query_variable,
    regex_match,
    stat,
    table,
    target,
    targets,
    textbox_variable,
    thresholds,
    timeseries,
    where,
    xychart,
)
from promptprof_processor.dashboards.widths import DEFAULT_LAYOUT, WindowLayout
from promptprof_processor.report.influxql import ALERT_MEASUREMENT, WINDOW_MEASUREMENT

UID = "promptprof-overview"
MONTH_S = 30 * 86_400
SERVICE = regex_match("service", "service")
PROMPT_ALIAS = "$tag_prompt_id"
SERIES_ALIAS = "$tag_prompt_id $tag_prompt_version $tag_model"


def from_chosen(windows: WindowLayout, *conditions: str,
                measurement: str = WINDOW_MEASUREMENT) -> str:
    """``FROM`` and ``WHERE`` reading ``measurement`` at the width chosen for the range."""
    return f"FROM {windows.source(measurement)} {where(windows.chosen(), *conditions)}"


def window_percentiles(windows: WindowLayout, fields: Sequence[str], conditions: Sequence[str],
                       alias: str) -> list[JSON]:
    """Targets drawing each window's own percentile ``fields`` (e.g. ``latency_p95_ms``), one
    line per full series (``GROUP BY *``), at the width chosen for the range."""
    chosen = from_chosen(windows, *conditions)
    return targets(*(
        (f'SELECT "{name}" {chosen} GROUP BY *',
         f"{alias} {name.removesuffix('_ms').rsplit('_', 1)[-1]}")
        for name in fields
    ))


def percentile_fields(prefix: str) -> tuple[str, ...]:
    """``latency`` -> the fields of its p50, p95 and p99."""
    return tuple(f"{prefix}_{p}_ms" for p in ("p50", "p95", "p99"))


def service_variable(*, multi: bool) -> JSON:
    """The services that wrote windows."""
    return query_variable(
        "service", "service",
        f'SHOW TAG VALUES FROM "{WINDOW_MEASUREMENT}" WITH KEY = "service"', multi=multi,
    )


def alert_annotation(*conditions: str) -> JSON:
    """Alerts of ``llm_alert`` as annotations (text = message; tags = prompt, rule, severity)."""
    query = (
        'SELECT "message", "prompt_id", "prompt_version", "rule", "severity", "state" '
        f'FROM "{ALERT_MEASUREMENT}" {where(*conditions)}'
    )
    return annotation("alerts", query, "message",
                      ["prompt_id", "prompt_version", "rule", "severity", "state"], "red")


def _headline(layout: Layout, windows: WindowLayout) -> None:
    chosen = from_chosen(windows, SERVICE)
    per_s = f'SELECT sum("calls") / $__range_s {chosen}'
    errors = f'SELECT sum("errors") / sum("calls") {chosen}'
    cost = f'SELECT sum("cost_usd_sum") {chosen}'
    month = f'SELECT sum("cost_usd_sum") * {MONTH_S} / $__range_s {chosen}'
    budget = (f'SELECT sum("cost_usd_sum") * {MONTH_S} / $__range_s / $budget_usd * 100 '
              f"{chosen}")
    stats = (
        stat("Calls per second", "Mean over the time range.", per_s, "reqps"),
        stat("Error rate", "Errors / calls over the time range.", errors, "percentunit",
             thresholds=thresholds((0.01, "orange"), (0.05, "red"))),
        stat("Cost in range", "Sum of cost_usd_sum.", cost, "currencyUSD", decimals=2),
        stat("Projected month cost", "Cost per second over the range times 30 days.", month,
             "currencyUSD", decimals=0),
        stat("Projected month vs budget",
             "The projection as a share of the monthly budget (variable budget_usd).", budget,
             "percent", decimals=0, thresholds=thresholds((80, "orange"), (100, "red"))),
    )
    for item, width in zip(stats, (4, 5, 5, 5, 5), strict=True):
        layout.add(item, width, 4)


def _by_prompt_per_width(windows: WindowLayout, select: str) -> list[JSON]:
    """A per-prompt sum over each window of the chosen width (``{w}``: its seconds)."""
    query = (f"SELECT {select} FROM {{source}} WHERE {{width}} AND {SERVICE} AND $timeFilter "
             'GROUP BY time({w}s), "prompt_id" fill(none)')
    return targets(*windows.per_width(query, WINDOW_MEASUREMENT, PROMPT_ALIAS))


def _traffic(layout: Layout, windows: WindowLayout) -> None:
    calls = _by_prompt_per_width(windows, 'sum("calls") / {w}')
    errors = _by_prompt_per_width(windows, 'sum("errors") / sum("calls")')
    layout.add(timeseries("Calls per second", "Calls (estimated, 1/sample_rate) per prompt, "
                          "per window.", calls, "reqps"), 12, 8)
    layout.add(timeseries("Error rate", "Errors / calls per prompt, per window.", errors,
                          "percentunit"), 12, 8)


def _latency(layout: Layout, windows: WindowLayout) -> None:
    conditions = (SERVICE,)
    layout.add(timeseries(
        "Latency p50 / p95 / p99",
        "Each window's percentiles of its calls (DDSketch, 1% relative error), one line per "
        "prompt version and model; the window width follows the time range.",
        window_percentiles(windows, percentile_fields("latency"), conditions, SERIES_ALIAS),
        "ms"), 12, 9)
    layout.add(timeseries(
        "Time to first token p50 / p95 / p99",
        "Streamed calls only; each window's percentiles, one line per prompt version and model.",
        window_percentiles(windows, percentile_fields("ttft"), conditions, SERIES_ALIAS),
        "ms"), 12, 9)


def _tokens(layout: Layout, windows: WindowLayout) -> None:
    for kind in ("input", "output"):
        layout.add(timeseries(f"{kind.capitalize()} tokens per minute",
                              f"Sum of {kind} tokens per prompt, per minute.",
                              _by_prompt_per_width(
                                  windows, f'sum("{kind}_tokens_sum") * 60 / {{w}}'),
                              "short"), 12, 8)


def _cost(layout: Layout, windows: WindowLayout) -> None:
    chosen = from_chosen(windows, SERVICE)
    for span, name in (("1h", "hour"), ("1d", "day")):
        query = (f'SELECT sum("cost_usd_sum") {chosen} '
                 f'GROUP BY time({span}), "prompt_id" fill(none)')
        layout.add(timeseries(f"Cost per {name}", f"USD per {name}, stacked by prompt.",
                              [_by_prompt(query)], "currencyUSD", bars=True, stacked=True,
                              ), 12, 8)


def _rankings(layout: Layout, windows: WindowLayout) -> None:
    chosen = from_chosen(windows, SERVICE)
    by_cost = (
        'SELECT sum("cost_usd_sum") AS cost_usd, sum("calls") AS calls, '
        'sum("cost_usd_sum") / sum("calls") AS cost_per_call '
        f'{chosen} GROUP BY "prompt_id"'
    )
    by_p95 = (
        'SELECT max("latency_p95_ms") AS worst_p95_ms, sum("calls") AS calls '
        f'{chosen} GROUP BY "prompt_id", "prompt_version", "model"'
    )
    layout.add(table("Top prompts by cost", "Cost over the time range.", by_cost, "cost_usd",
                     units={"cost_usd": "currencyUSD", "cost_per_call": "currencyUSD"}), 12, 8)
    layout.add(table("Top prompts by p95 latency",
                     "The highest p95 of one window (of the width chosen for the range) per "
                     "prompt version and model: a percentile of that window's calls.", by_p95,
                     "worst_p95_ms", units={"worst_p95_ms": "ms"}), 12, 8)


def _quality_and_alerts(layout: Layout, windows: WindowLayout) -> None:
    chosen = from_chosen(windows, SERVICE)
    scatter = (
        'SELECT sum("cost_usd_sum") / sum("calls") AS cost_per_call, '
        'mean("quality_mean") AS quality '
        f'{chosen} GROUP BY "prompt_id", "prompt_version"'
    )
    alerts = (
        'SELECT "prompt_id", "prompt_version", "model", "rule", "severity", "state", '
        '"observed", "baseline", "threshold", "message" '
        f'FROM "{ALERT_MEASUREMENT}" {where(regex_match("service", "service"))}'
    )
    layout.add(xychart("Quality against cost per prompt version",
                       "Mean quality score against mean cost per call, one point per version.",
                       scatter, "cost_per_call", "quality", ["prompt_id", "prompt_version"],
                       "currencyUSD", "percentunit"), 12, 10)
    layout.add(table("Recent alerts", "Alerts of the anomaly detector (newest first).",
                     alerts, "Time", limit=50), 12, 10)


def _by_prompt(query: str) -> JSON:
    return target(query, alias=PROMPT_ALIAS)


def overview(windows: WindowLayout = DEFAULT_LAYOUT) -> JSON:
    """The overview dashboard's JSON, for workers writing the ``windows`` layout."""
    layout = Layout()
    _headline(layout, windows)
    for title, section in (("Traffic", _traffic), ("Latency", _latency), ("Tokens", _tokens),
                           ("Cost", _cost), ("Rankings", _rankings),
                           ("Quality and alerts", _quality_and_alerts)):
        layout.row(title)
        section(layout, windows)
    budget = textbox_variable("budget_usd", "monthly budget (USD)", "1000",
                              "Monthly LLM budget in USD, for the projection panel.")
    return dashboard(
        UID, "promptprof: overview",
        "Every prompt's traffic, errors, latency, tokens, cost and quality from llm_window.",
        layout, [service_variable(multi=True), budget],
        [alert_annotation(regex_match("service", "service"))],
    )
