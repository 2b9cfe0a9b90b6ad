"""Read the latest window figures back from InfluxDB (InfluxQL over the v1 ``/query`` API)."""

from __future__ import annotations

from typing import Any

import httpx

from promptprof.config import InfluxSettings

LATEST = (
    "SELECT last(latency_p50_ms) AS p50, last(latency_p95_ms) AS p95, "
    "last(latency_p99_ms) AS p99, last(error_rate) AS error_rate, last(calls) AS calls, "
    "last(input_tokens_mean) AS in_tokens, last(output_tokens_mean) AS out_tokens, "
    "last(cost_usd_sum) AS cost FROM llm_window WHERE width = '{width}' AND time > now() - 1h "
    "GROUP BY prompt_id, prompt_version, model"
)


def query(settings: InfluxSettings, q: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query, each a dict of the series' tags and the columns."""
    params = {"db": settings.database, "q": q}
    if settings.username and settings.password:
        params |= {"u": settings.username, "p": settings.password.get_secret_value()}
    response = httpx.get(f"{settings.url}/query", params=params, timeout=settings.timeout_s)
    response.raise_for_status()
    rows: list[dict[str, Any]] = []
    for result in response.json().get("results", []):
        for series in result.get("series", []):
            tags, columns = series.get("tags", {}), series["columns"]
            rows.extend({**tags, **dict(zip(columns, v, strict=True))} for v in series["values"])
    return rows


def latest_windows(settings: InfluxSettings, width_s: int = 10) -> list[dict[str, Any]]:
    """The newest closed window per prompt, version and model."""
    return query(settings, LATEST.format(width=f"{width_s}s"))
