"""The demo's live terminal view (rich): what the generator sent and what the producer shipped."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from promptprof_tools.demo.traffic import Injection, TrafficStats


def traffic_table(stats: TrafficStats) -> Table:
    """Calls and errors per prompt, version and model."""
    table = Table(title="calls made (simulated provider)", expand=False)
    for column in ("prompt", "version", "model"):
        table.add_column(column)
    for column in ("calls", "errors", "error %"):
        table.add_column(column, justify="right")
    for (prompt, version, model), calls in sorted(stats.calls.items()):
        errors = stats.errors[(prompt, version, model)]
        rate = f"{100 * errors / calls:.1f}"
        table.add_row(prompt, version, model, str(calls), str(errors), rate)
    return table


def producer_table(stats: dict[str, Any]) -> Table:
    """The producer's self-metrics."""
    table = Table(title="producer (promptprof)", expand=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "recorded", "sent_events", "sent_records", "sent_bytes", "buffer_depth", "dropped",
        "retries", "send_errors", "connect_failures",
    ):
        table.add_row(key, f"{stats.get(key, 0):,}")
    return table


def windows_table(rows: list[dict[str, Any]]) -> Table:
    """The newest closed 10 s window per prompt, version and model, read back from InfluxDB."""
    table = Table(title="latest 10 s windows (read back from InfluxDB)", expand=False)
    for column in ("prompt", "version", "model"):
        table.add_column(column)
    for column in ("calls", "p50 ms", "p95 ms", "p99 ms", "error %", "in tok", "out tok", "cost $"):
        table.add_column(column, justify="right")
    for row in sorted(rows, key=lambda r: (r["prompt_id"], r["prompt_version"], r["model"])):
        table.add_row(
            row["prompt_id"], row["prompt_version"], row["model"], _num(row["calls"], "{:.0f}"),
            _num(row["p50"]), _num(row["p95"]), _num(row["p99"]),
            _num(row["error_rate"] and 100 * row["error_rate"], "{:.1f}"),
            _num(row["in_tokens"]), _num(row["out_tokens"]), _num(row["cost"], "{:.4f}"),
        )
    return table


def alerts_table(alerts: list[dict[str, Any]], injection: Injection) -> Table:
    """Alerts the demo's webhook receiver got (signature verified)."""
    title = (
        f"alerts received by the local webhook (latency x{injection.latency_factor} injected "
        f"into {injection.prompt_id!r} after {injection.after_s:.0f} s)"
    )
    table = Table(title=title, expand=False)
    for column in ("state", "severity", "prompt", "version", "window", "message"):
        table.add_column(column)
    for alert in alerts[-8:]:
        series, window = alert["series"], alert["window"]
        table.add_row(
            alert["state"], alert["severity"], series["prompt_id"], series["prompt_version"],
            f"{window['width_s']}s", alert["message"],
        )
    return table


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(traffic: TrafficStats, producer: dict[str, Any], *extra: Any) -> Group:
    """The whole screen."""
    return Group(traffic_table(traffic), producer_table(producer), *extra)
