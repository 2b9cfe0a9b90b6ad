"""The overview dashboard: traffic, errors, latency, tokens, cost and quality of every prompt.

Window figures come from ``llm_window`` at one window width (variable ``width``), so calls are
never counted twice across widths. Percentiles cannot be merged from window figures: a time
bucket shows the mean of its windows' percentiles (exact when the bucket is one window).
"""

from __future__ import annotations

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
from promptprof_processor.report.influxql import ALERT_MEASUREMENT, WINDOW_MEASUREMENT

UID = "promptprof-overview"
MONTH_S = 30 * 86_400
WINDOWS = f'FROM "{WINDOW_MEASUREMENT}"'
FILTER = where("\"width\" = '$width'", regex_match("service", "service"))
BY_PROMPT = 'GROUP BY time($__interval), "prompt_id" fill(none)'
PROMPT_ALIAS = "$tag_prompt_id"


def width_variable() -> JSON:
    """The window width to read (10s by default): every panel reads one width only."""
    return query_variable(
        "width", "window width", f'SHOW TAG VALUES FROM "{WINDOW_MEASUREMENT}" WITH KEY = "width"',
        current="10s",
    )


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


def _headline(layout: Layout) -> None:
    per_s = f'SELECT sum("calls") / $__range_s {WINDOWS} {FILTER}'
    errors = f'SELECT sum("errors") / sum("calls") {WINDOWS} {FILTER}'
    cost = f'SELECT sum("cost_usd_sum") {WINDOWS} {FILTER}'
    month = f'SELECT sum("cost_usd_sum") * {MONTH_S} / $__range_s {WINDOWS} {FILTER}'
    budget = (f'SELECT sum("cost_usd_sum") * {MONTH_S} / $__range_s / $budget_usd * 100 '
              f"{WINDOWS} {FILTER}")
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


def _traffic(layout: Layout) -> None:
    calls = f'SELECT sum("calls") * 1000 / $__interval_ms {WINDOWS} {FILTER} {BY_PROMPT}'
    errors = f'SELECT sum("errors") / sum("calls") {WINDOWS} {FILTER} {BY_PROMPT}'
    layout.add(timeseries("Calls per second", "Calls (estimated, 1/sample_rate) per prompt.",
                          [_by_prompt(calls)], "reqps"), 12, 8)
    layout.add(timeseries("Error rate", "Errors / calls per prompt.", [_by_prompt(errors)],
                          "percentunit"), 12, 8)


def _percentiles(prefix: str, figures: tuple[str, ...] = ("p50", "p95", "p99")) -> list[JSON]:
    return targets(*(
        (f'SELECT mean("{prefix}_{p}_ms") {WINDOWS} {FILTER} {BY_PROMPT}', f"{PROMPT_ALIAS} {p}")
        for p in figures
    ))


def _latency(layout: Layout) -> None:
    layout.add(timeseries("Latency p50 / p95 / p99",
                          "Mean of the window percentiles per prompt (all versions and models).",
                          _percentiles("latency"), "ms"), 12, 9)
    layout.add(timeseries("Time to first token p50 / p95 / p99",
                          "Streamed calls only; mean of the window percentiles per prompt.",
                          _percentiles("ttft"), "ms"), 12, 9)


def _tokens(layout: Layout) -> None:
    for kind in ("input", "output"):
        query = (f'SELECT sum("{kind}_tokens_sum") * 60000 / $__interval_ms {WINDOWS} {FILTER} '
                 f"{BY_PROMPT}")
        layout.add(timeseries(f"{kind.capitalize()} tokens per minute",
                              f"Sum of {kind} tokens per prompt, per minute.", [_by_prompt(query)],
                              "short"), 12, 8)


def _cost(layout: Layout) -> None:
    for span, name in (("1h", "hour"), ("1d", "day")):
        query = (f'SELECT sum("cost_usd_sum") {WINDOWS} {FILTER} '
                 f'GROUP BY time({span}), "prompt_id" fill(none)')
        layout.add(timeseries(f"Cost per {name}", f"USD per {name}, stacked by prompt.",
                              [_by_prompt(query)], "currencyUSD", bars=True, stacked=True,
                              min_interval=None), 12, 8)


def _rankings(layout: Layout) -> None:
    by_cost = (
        'SELECT sum("cost_usd_sum") AS cost_usd, sum("calls") AS calls, '
        'sum("cost_usd_sum") / sum("calls") AS cost_per_call '
        f'{WINDOWS} {FILTER} GROUP BY "prompt_id"'
    )
    by_p95 = (
        'SELECT mean("latency_p95_ms") AS p95_ms, max("latency_p95_ms") AS worst_p95_ms, '
        f'sum("calls") AS calls {WINDOWS} {FILTER} GROUP BY "prompt_id", "prompt_version"'
    )
    layout.add(table("Top prompts by cost", "Cost over the time range.", by_cost, "cost_usd",
                     units={"cost_usd": "currencyUSD", "cost_per_call": "currencyUSD"}), 12, 8)
    layout.add(table("Top prompts by p95 latency",
                     "Mean and worst window p95 over the time range.", by_p95, "p95_ms",
                     units={"p95_ms": "ms", "worst_p95_ms": "ms"}), 12, 8)


def _quality_and_alerts(layout: Layout) -> None:
    scatter = (
        'SELECT mean("cost_per_call_usd") AS cost_per_call, mean("quality_mean") AS quality '
        f'{WINDOWS} {FILTER} GROUP BY "prompt_id", "prompt_version"'
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


def overview() -> JSON:
    """The overview dashboard's JSON."""
    layout = Layout()
    _headline(layout)
    for title, section in (("Traffic", _traffic), ("Latency", _latency), ("Tokens", _tokens),
                           ("Cost", _cost), ("Rankings", _rankings),
                           ("Quality and alerts", _quality_and_alerts)):
        layout.row(title)
        section(layout)
    budget = textbox_variable("budget_usd", "monthly budget (USD)", "1000",
                              "Monthly LLM budget in USD, for the projection panel.")
    return dashboard(
        UID, "promptprof: overview",
        "Every prompt's traffic, errors, latency, tokens, cost and quality from llm_window.",
        layout, [width_variable(), service_variable(multi=True), budget],
        [alert_annotation(regex_match("service", "service"))],
    )
