"""The demo's live terminal view (rich): what the generator sent and what the producer shipped."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from promptprof.demo.traffic import TrafficStats


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


def render(traffic: TrafficStats, producer: dict[str, Any], *extra: Any) -> Group:
    """The whole screen."""
    return Group(traffic_table(traffic), producer_table(producer), *extra)
