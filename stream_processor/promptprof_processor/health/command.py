"""``promptprof status``: the pipeline's health in a terminal, read from InfluxDB.

Producers (per service, environment, host and process: last report, sent, dropped, buffer,
spool, retries, last error, stale or not), workers (ready, sink backlog and its oldest window,
write and webhook failures), partitions (lag in records and seconds, events per second, open
series, checkpoint age) and dead letters by stage and reason. Exit status 0 when all is well, 1
when a producer is stale or dropped events within the drops window, or a worker is not ready or
its sink is behind by more than ``health.alerts.sink_behind_s``; 2 when InfluxDB cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from promptprof import ConfigError, load_settings
from promptprof_processor.health.settings import PipelineAlertSettings
from promptprof_processor.health.status import PipelineStatus, as_dict, read_status
from promptprof_processor.report.influxql import InfluxQLClient, InfluxQLError
from promptprof_processor.settings import ProcessorSettings

PRODUCER_COLUMNS = ("recorded", "sent_events", "dropped", "buffer_depth", "bytes_held",
                    "spooled_events", "replayed_events", "retries")
WORKER_COLUMNS = ("ready", "partitions", "sink_backlog", "sink_oldest_unwritten_s",
                  "influx_write_failures", "webhook_failed_attempts", "webhook_dead_lettered")
PARTITION_COLUMNS = ("lag_records", "lag_s", "events_per_s", "open_series", "late_events",
                     "checkpoint_age_s", "dead_letters")


def status_command(config: Path | None, as_json: bool = False) -> int:
    """Print the status; the exit status (see the module documentation)."""
    try:
        settings = load_settings(config, ProcessorSettings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        with InfluxQLClient(settings.influx) as client:
            status = read_status(client, settings.health.alerts)
    except InfluxQLError as exc:
        print(f"promptprof status: {exc}", file=sys.stderr)
        return 2
    if as_json:
        sys.stdout.write(orjson.dumps(as_dict(status), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render(status, settings.health.alerts, Console())
    return 1 if problems(status, settings.health.alerts) else 0


def problems(status: PipelineStatus, settings: PipelineAlertSettings) -> list[str]:
    """What is wrong, one line each."""
    out = [f"producer {p.key} stale ({p.age_s:.0f} s)" for p in status.producers if p.stale]
    out += [f"producer {p.key} dropped {p.drops_in_window:g}" for p in status.producers
            if p.drops_in_window > 0]
    for w in status.workers:
        if not w.get("ready"):
            out.append(f"worker {w['worker']} not ready")
        if (w.get("sink_oldest_unwritten_s") or 0) > settings.sink_behind_s:
            out.append(f"worker {w['worker']} sink behind")
    return out


def render(status: PipelineStatus, settings: PipelineAlertSettings, console: Console) -> None:
    """Tables of producers, workers, partitions and dead letters, then the problems."""
    producers = _table("Producers", ("service", "environment", "host", "pid", "age_s", "state",
                                     *PRODUCER_COLUMNS, "last_error"))
    for p in status.producers:
        state = "stale" if p.stale else "closed" if p.final else "ok"
        producers.add_row(p.service, p.environment, p.host, p.pid, f"{p.age_s:.0f}", state,
                          *(_cell(p.last.get(c)) for c in PRODUCER_COLUMNS),
                          _cell(p.last.get("last_error")))
    workers = _table("Workers", ("worker", *WORKER_COLUMNS))
    for w in status.workers:
        workers.add_row(w["worker"], *(_cell(w.get(c)) for c in WORKER_COLUMNS))
    partitions = _table("Partitions", ("worker", "partition", *PARTITION_COLUMNS))
    for row in sorted(status.partitions, key=lambda r: (r["worker"], int(r["partition"]))):
        partitions.add_row(row["worker"], row["partition"],
                           *(_cell(row.get(c)) for c in PARTITION_COLUMNS))
    dead = _table("Dead letters", ("worker", "stage", "partition", "reason", "count"))
    for row in status.dead_letters:
        dead.add_row(row["worker"], row["stage"], row.get("partition") or "", row["reason"],
                     _cell(row["count"]))
    for table in (producers, workers, partitions, dead):
        console.print(table)
    for line in problems(status, settings) or ["no problem found"]:
        console.print(line)


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if not value.is_integer() else f"{value:.0f}"
    return str(value)
