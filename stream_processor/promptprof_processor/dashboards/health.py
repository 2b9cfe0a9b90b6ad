"""The pipeline-health dashboard: producers delivering or not, workers behind or not, dead letters.

Reads the self-metric measurements (:mod:`promptprof_processor.health.figures`,
:mod:`promptprof_processor.health.producers`). Counters there are cumulative (since the producer
or worker started), so panels plot their ``max`` per interval: a rise is new drops, failures or
dead letters. A producer that stopped reporting shows as its reports per interval falling to 0.
Linked from the overview and the drill-down (and they from it) through the ``promptprof`` tag.
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
    timeseries,
    where,
)
from promptprof_processor.health.figures import (
    DEAD_LETTER_MEASUREMENT,
    PARTITION_MEASUREMENT,
    WORKER_MEASUREMENT,
)
from promptprof_processor.health.producers import PRODUCER_MEASUREMENT

UID = "promptprof-health"
PRODUCERS = f'FROM "{PRODUCER_MEASUREMENT}" {where(regex_match("service", "service"))}'
PARTITIONS = f'FROM "{PARTITION_MEASUREMENT}" {where(regex_match("worker", "worker"))}'
WORKERS = f'FROM "{WORKER_MEASUREMENT}" {where(regex_match("worker", "worker"))}'
DEAD_LETTERS = f'FROM "{DEAD_LETTER_MEASUREMENT}" {where(regex_match("worker", "worker"))}'
BY_PRODUCER = 'GROUP BY time($__interval), "service", "host", "pid"'
BY_PARTITION = 'GROUP BY time($__interval), "worker", "partition" fill(none)'
BY_WORKER = 'GROUP BY time($__interval), "worker" fill(none)'
PRODUCER_ALIAS = "$tag_service $tag_host:$tag_pid"
PARTITION_ALIAS = "$tag_worker p$tag_partition"


def variables() -> list[JSON]:
    """service (producers) and worker, both multi-value."""
    return [
        query_variable("service", "service",
                       f'SHOW TAG VALUES FROM "{PRODUCER_MEASUREMENT}" WITH KEY = "service"',
                       multi=True),
        query_variable("worker", "worker",
                       f'SHOW TAG VALUES FROM "{WORKER_MEASUREMENT}" WITH KEY = "worker"',
                       multi=True),
    ]


def _series(title: str, description: str, unit: str, query: str, alias: str) -> JSON:
    return timeseries(title, description, [target(query, alias=alias)], unit, min_interval=None)


def _producers_table() -> JSON:
    figures = ("sent_events", "recorded", "dropped", "buffer_depth", "bytes_held",
               "spooled_events", "replayed_events", "retries")
    selects = ", ".join(f'last("{f}") AS {f}' for f in figures)
    query = f'SELECT {selects} {PRODUCERS} GROUP BY "service", "environment", "host", "pid"'
    return table("Producers", "Each producer's last report in the range: what it recorded, "
                 "sent, dropped (all reasons), holds, spooled and replayed.", query, "dropped",
                 limit=50, units={"bytes_held": "bytes"})


def _partitions_table() -> JSON:
    figures = ("lag_records", "lag_s", "events_per_s", "open_series", "checkpoint_age_s",
               "dead_letters")
    selects = ", ".join(f'last("{f}") AS {f}' for f in figures)
    query = f'SELECT {selects} {PARTITIONS} GROUP BY "worker", "partition"'
    return table("Partitions", "Each partition's last sample in the range.", query,
                 "lag_records", limit=100, units={"lag_s": "s", "checkpoint_age_s": "s"})


def _panels() -> list[tuple[JSON, int, int]]:
    return [
        (_series("Producer reports", "Stats reports per interval: a producer that stops "
                 "reporting (killed, hung, cut off) falls to 0.", "short",
                 f'SELECT count("sent_events") {PRODUCERS} {BY_PRODUCER} fill(0)',
                 PRODUCER_ALIAS), 12, 8),
        (_series("Producer drops (cumulative)", "Events each producer dropped since it "
                 "started, all reasons; a rise is new drops.", "short",
                 f'SELECT max("dropped") {PRODUCERS} {BY_PRODUCER} fill(none)',
                 PRODUCER_ALIAS), 12, 8),
        (_series("Producer buffer depth", "Calls waiting in each producer's buffer.", "short",
                 f'SELECT max("buffer_depth") {PRODUCERS} {BY_PRODUCER} fill(none)',
                 PRODUCER_ALIAS), 12, 8),
        (_producers_table(), 12, 8),
        (_series("Consumer lag (records)", "Records of each partition not yet aggregated: the "
                 "fetch's high watermark minus the next offset.", "short",
                 f'SELECT max("lag_records") {PARTITIONS} {BY_PARTITION}', PARTITION_ALIAS),
         12, 8),
        (_series("Consumer lag (seconds)", "Age of the last record aggregated while records "
                 "wait.", "s", f'SELECT max("lag_s") {PARTITIONS} {BY_PARTITION}',
                 PARTITION_ALIAS), 12, 8),
        (_series("Events per second", "Events aggregated per second, per partition.", "short",
                 f'SELECT mean("events_per_s") {PARTITIONS} {BY_PARTITION}', PARTITION_ALIAS),
         12, 8),
        (_series("Checkpoint age", "Seconds since each partition's last checkpoint.", "s",
                 f'SELECT max("checkpoint_age_s") {PARTITIONS} {BY_PARTITION}',
                 PARTITION_ALIAS), 12, 8),
        (_series("Open series", "Series with an open window, per partition.", "short",
                 f'SELECT max("open_series") {PARTITIONS} {BY_PARTITION}', PARTITION_ALIAS),
         12, 8),
        (_series("Sink backlog", "Windows not yet written to InfluxDB, per worker.", "short",
                 f'SELECT max("sink_backlog") {WORKERS} {BY_WORKER}', "$tag_worker"), 12, 8),
        (_series("Oldest unwritten window", "Age of the oldest window the sink is writing.",
                 "s", f'SELECT max("sink_oldest_unwritten_s") {WORKERS} {BY_WORKER}',
                 "$tag_worker"), 12, 8),
        (_series("InfluxDB and webhook failures (cumulative)", "Failed InfluxDB write tries "
                 "and webhook delivery tries since the worker started.", "short",
                 f'SELECT max("influx_write_failures") AS influx, '
                 f'max("webhook_failed_attempts") AS webhook {WORKERS} {BY_WORKER}',
                 "$tag_worker $col"), 12, 8),
        (_series("Dead letters by reason (cumulative)", "Records sent to the dead-letter "
                 "topic since the worker started, by stage and reason class.", "short",
                 f'SELECT max("count") {DEAD_LETTERS} '
                 'GROUP BY time($__interval), "worker", "stage", "partition", "reason" '
                 "fill(none)", "$tag_stage $tag_reason $tag_partition"), 12, 8),
        (_partitions_table(), 12, 8),
    ]


def health() -> JSON:
    """The pipeline-health dashboard's JSON."""
    layout = Layout()
    for item, w, h in _panels():
        layout.add(item, w, h)
    return dashboard(
        UID, "promptprof: pipeline health",
        "Whether every producer delivers, how far behind the workers and the sink are, what "
        "went to the dead-letter topic and why.",
        layout, variables(), [],
    )
