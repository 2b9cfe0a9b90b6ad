"""The prompt drill-down dashboard: one prompt, its versions (and models) overlaid.

Template variables chain: ``service`` -> ``prompt`` (prompts of that service) -> ``version`` and
``model`` (multi-value, of that prompt). Every series is grouped by version and model, so two
versions of a prompt appear as two lines in each panel. The window width follows the time range
(:mod:`~promptprof_processor.dashboards.widths`); percentiles are each window's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from promptprof_processor.dashboards.model import (
    JSON,
    Layout,
    dashboard,
    query_variable,
    regex_match,
    table,
    targets,
    timeseries,
)
from promptprof_processor.dashboards.overview import (
    alert_annotation,
    from_chosen,
    percentile_fields,
    service_variable,
    window_percentiles,
)
from promptprof_processor.dashboards.widths import DEFAULT_LAYOUT, WindowLayout
from promptprof_processor.report.influxql import ERRORS_MEASUREMENT, WINDOW_MEASUREMENT

UID = "promptprof-prompt"
SERIES = (
    regex_match("service", "service"),
    regex_match("prompt_id", "prompt"),
    regex_match("prompt_version", "version"),
    regex_match("model", "model"),
)
VERSION_ALIAS = "$tag_prompt_version $tag_model"


def _tag_values(key: str, *conditions: str) -> str:
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f'SHOW TAG VALUES FROM "{WINDOW_MEASUREMENT}" WITH KEY = "{key}"{clause}'


def variables() -> list[JSON]:
    """service, prompt, version (multi), model (multi)."""
    of_service = regex_match("service", "service")
    of_prompt = regex_match("prompt_id", "prompt")
    return [
        service_variable(multi=False),
        query_variable("prompt", "prompt", _tag_values("prompt_id", of_service)),
        query_variable("version", "version", _tag_values("prompt_version", of_service, of_prompt),
                       multi=True),
        query_variable("model", "model", _tag_values("model", of_service, of_prompt), multi=True),
    ]


def _series(windows: WindowLayout, title: str, description: str, unit: str,
            *selects: tuple[str, str], measurement: str = WINDOW_MEASUREMENT,
            by: str = '"prompt_version", "model"', alias: str = VERSION_ALIAS,
            bars: bool = False) -> JSON:
    """A time series of ``(select expression, alias suffix)`` pairs per window of the chosen
    width (``{w}`` in an expression: its seconds), by version and model."""
    chosen = " AND ".join(["{width}", *SERIES, "$timeFilter"])
    queries = [
        pair
        for expr, suffix in selects
        for pair in windows.per_width(
            f"SELECT {expr} FROM {{source}} WHERE {chosen} GROUP BY time({{w}}s), {by} "
            "fill(none)", measurement, f"{alias}{suffix}")
    ]
    return timeseries(title, description, targets(*queries), unit, bars=bars, stacked=bars)


def _percentiles(windows: WindowLayout, title: str, description: str, fields: Sequence[str],
                 unit: str) -> JSON:
    return timeseries(title, description,
                      window_percentiles(windows, fields, SERIES, VERSION_ALIAS), unit)


def _comparison(windows: WindowLayout) -> JSON:
    query = (
        'SELECT sum("calls") AS calls, sum("errors") / sum("calls") AS error_rate, '
        'max("latency_p50_ms") AS worst_p50_ms, max("latency_p95_ms") AS worst_p95_ms, '
        'max("latency_p99_ms") AS worst_p99_ms, max("ttft_p50_ms") AS worst_ttft_p50_ms, '
        'sum("input_tokens_sum") / sum("input_tokens_calls") AS input_tokens, '
        'sum("output_tokens_sum") / sum("output_tokens_calls") AS output_tokens, '
        'sum("cost_usd_sum") / sum("calls") AS cost_per_call, mean("quality_mean") AS quality '
        f'{from_chosen(windows, *SERIES)} GROUP BY "prompt_version", "model"'
    )
    units = {"error_rate": "percentunit", "worst_p50_ms": "ms", "worst_p95_ms": "ms",
             "worst_p99_ms": "ms", "worst_ttft_p50_ms": "ms", "cost_per_call": "currencyUSD",
             "quality": "percentunit"}
    return table("Versions compared",
                 "Figures over the time range per version and model; worst_*: the highest "
                 "percentile of one window (a percentile of that window's calls).",
                 query, "calls", units=units)


def drilldown(windows: WindowLayout = DEFAULT_LAYOUT) -> JSON:
    """The prompt drill-down dashboard's JSON, for workers writing the ``windows`` layout."""
    layout = Layout()
    layout.add(_comparison(windows), 24, 7)
    panels = (
        _series(windows, "Calls per second", "Calls per second by version and model.", "reqps",
                ('sum("calls") / {w}', "")),
        _series(windows, "Error rate", "Errors / calls by version and model.", "percentunit",
                ('sum("errors") / sum("calls")', "")),
        _percentiles(windows, "Latency p50 / p95 / p99",
                     "Each window's percentiles of its calls (1% relative error).",
                     percentile_fields("latency"), "ms"),
        _percentiles(windows, "Time to first token p50 / p95 / p99",
                     "Streamed calls only; each window's percentiles.",
                     percentile_fields("ttft"), "ms"),
        _series(windows, "Tokens per call", "Mean input and output tokens per call.", "short",
                ('sum("input_tokens_sum") / sum("input_tokens_calls")', " input"),
                ('sum("output_tokens_sum") / sum("output_tokens_calls")', " output")),
        _series(windows, "Cost per call", "Cost of the window / calls of the window.",
                "currencyUSD", ('sum("cost_usd_sum") / sum("calls")', "")),
        _percentiles(windows, "Quality", "Each window's mean quality score and its 10th "
                     "percentile.", ("quality_mean", "quality_p10"), "percentunit"),
        _series(windows, "Errors by type", "Errors per error type and version "
                "(llm_window_errors).", "short", ('sum("errors")', ""),
                measurement=ERRORS_MEASUREMENT, by='"prompt_version", "error_type"',
                alias="$tag_prompt_version $tag_error_type", bars=True),
    )
    for item in panels:
        layout.add(item, 12, 8)
    return dashboard(
        UID, "promptprof: prompt drill-down",
        "One prompt's versions and models overlaid: traffic, errors, latency, tokens, cost, "
        "quality.",
        layout, variables(), [alert_annotation(*SERIES[:2])],
    )
