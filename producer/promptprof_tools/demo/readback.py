"""Read the latest window figures back from InfluxDB (InfluxQL over the v1 ``/query`` API)."""

from __future__ import annotations

from typing import Any

from promptprof_processor.settings import InfluxSettings

LATEST = (
    "SELECT last(latency_p50_ms) AS p50, last(latency_p95_ms) AS p95, "
    "last(latency_p99_ms) AS p99, last(error_rate) AS error_rate, last(calls) AS calls, "
    "last(input_tokens_mean) AS in_tokens, last(output_tokens_mean) AS out_tokens, "
    "last(cost_usd_sum) AS cost FROM llm_window WHERE width = '{width}' AND time > now() - 1h "
    "GROUP BY prompt_id, prompt_version, model"
)


def latest_windows(settings: InfluxSettings, width_s: int = 10) -> list[dict[str, Any]]:
    """The newest closed window per prompt, version and model."""
    from promptprof_processor.report.influxql import InfluxQLClient

    with InfluxQLClient(settings) as client:
        return client.rows(LATEST.format(width=f"{width_s}s"))
