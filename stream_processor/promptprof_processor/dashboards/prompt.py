"""The prompt drill-down dashboard: one prompt, its versions (and models) overlaid.

Template variables chain: ``service`` -> ``prompt`` (prompts of that service) -> ``version`` and
``model`` (multi-value, of that prompt). Every series is grouped by version and model, so two
versions of a prompt appear as two lines in each panel.
"""

from __future__ import annotations

from promptprof_processor.dashboards.model import (
    JSON,
    Layout,
    dashboard,
    query_variable,
    regex_match,
    table,
    target,
    targets,
    timeseries,
    where,
)
from promptprof_processor.dashboards.overview import (
    alert_annotation,
    service_variable,
    width_variable,
)
from promptprof_processor.report.influxql import ERRORS_MEASUREMENT, WINDOW_MEASUREMENT

UID = "promptprof-prompt"
SERIES = (
    "\"width\" = '$width'",
    regex_match("service", "service"),
    regex_match("prompt_id", "prompt"),
    regex_match("prompt_version", "version"),
    regex_match("model", "model"),
)
FILTER = where(*SERIES)
WINDOWS = f'FROM "{WINDOW_MEASUREMENT}"'
BY_VERSION = 'GROUP BY time($__interval), "prompt_version", "model" fill(none)'
VERSION_ALIAS = "$tag_prompt_version $tag_model"


def _tag_values(key: str, *conditions: str) -> str:
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f'SHOW TAG VALUES FROM "{WINDOW_MEASUREMENT}" WITH KEY = "{key}"{clause}'


def variables() -> list[JSON]:
    """width, service, prompt, version (multi), model (multi)."""
    of_service = regex_match("service", "service")
    of_prompt = regex_match("prompt_id", "prompt")
    return [
        width_variable(),
        service_variable(multi=False),
        query_variable("prompt", "prompt", _tag_values("prompt_id", of_service)),
        query_variable("version", "version", _tag_values("prompt_version", of_service, of_prompt),
                       multi=True),
        query_variable("model", "model", _tag_values("model", of_service, of_prompt), multi=True),
    ]


def _series(title: str, description: str, unit: str, *selects: tuple[str, str]) -> JSON:
    """A time series of ``(select expression, alias suffix)`` pairs by version and model."""
    queries = targets(*(
        (f"SELECT {expr} {WINDOWS} {FILTER} {BY_VERSION}", f"{VERSION_ALIAS}{suffix}")
        for expr, suffix in selects
    ))
    return timeseries(title, description, queries, unit)


def _percentiles(prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f'mean("{prefix}_{p}_ms")', f" {p}") for p in ("p50", "p95", "p99"))


def _comparison() -> JSON:
    query = (
        'SELECT sum("calls") AS calls, sum("errors") / sum("calls") AS error_rate, '
        'mean("latency_p50_ms") AS p50_ms, mean("latency_p95_ms") AS p95_ms, '
        'mean("latency_p99_ms") AS p99_ms, mean("ttft_p50_ms") AS ttft_p50_ms, '
        'mean("input_tokens_mean") AS input_tokens, mean("output_tokens_mean") AS output_tokens, '
        'sum("cost_usd_sum") / sum("calls") AS cost_per_call, mean("quality_mean") AS quality '
        f'{WINDOWS} {FILTER} GROUP BY "prompt_version", "model"'
    )
    units = {"error_rate": "percentunit", "p50_ms": "ms", "p95_ms": "ms", "p99_ms": "ms",
             "ttft_p50_ms": "ms", "cost_per_call": "currencyUSD", "quality": "percentunit"}
    return table("Versions compared", "Figures over the time range per version and model.",
                 query, "calls", units=units)


def _errors_by_type() -> JSON:
    query = (f'SELECT sum("errors") FROM "{ERRORS_MEASUREMENT}" {FILTER} '
             'GROUP BY time($__interval), "prompt_version", "error_type" fill(none)')
    return timeseries("Errors by type", "Errors per error type and version (llm_window_errors).",
                      [target(query, alias="$tag_prompt_version $tag_error_type")], "short",
                      bars=True, stacked=True)


def drilldown() -> JSON:
    """The prompt drill-down dashboard's JSON."""
    layout = Layout()
    layout.add(_comparison(), 24, 7)
    panels = (
        _series("Calls per second", "Calls per second by version and model.", "reqps",
                ('sum("calls") * 1000 / $__interval_ms', "")),
        _series("Error rate", "Errors / calls by version and model.", "percentunit",
                ('sum("errors") / sum("calls")', "")),
        _series("Latency p50 / p95 / p99", "Mean of the window percentiles.", "ms",
                *_percentiles("latency")),
        _series("Time to first token p50 / p95 / p99", "Streamed calls only.", "ms",
                *_percentiles("ttft")),
        _series("Tokens per call", "Mean input and output tokens per call.", "short",
                ('mean("input_tokens_mean")', " input"), ('mean("output_tokens_mean")', " output")),
        _series("Cost per call", "Cost of the window / calls of the window.", "currencyUSD",
                ('sum("cost_usd_sum") / sum("calls")', "")),
        _series("Quality", "Mean quality score and its 10th percentile.", "percentunit",
                ('mean("quality_mean")', " mean"), ('mean("quality_p10")', " p10")),
        _errors_by_type(),
    )
    for item in panels:
        layout.add(item, 12, 8)
    return dashboard(
        UID, "promptprof: prompt drill-down",
        "One prompt's versions and models overlaid: traffic, errors, latency, tokens, cost, "
        "quality.",
        layout, variables(), [alert_annotation(*SERIES[1:3])],
    )
