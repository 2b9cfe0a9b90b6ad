"""The worker's self-metrics at one moment, and their InfluxDB points.

Measurements (timestamp: the moment of the sample):

``promptprof_partition``
    Tags ``worker``, ``partition``. Fields ``lag_records`` *int* (the fetch's high watermark
    minus the next offset to aggregate), ``lag_s`` (when records wait: the age of the last record
    aggregated, by its Kafka timestamp; else 0), ``events`` *int* (aggregated since the
    partition's first checkpoint), ``events_per_s`` (since the previous sample), ``late_events``
    *int*, ``open_series``, ``overflow_events`` *int*, ``overflowed_prompts``,
    ``checkpoint_age_s``, ``next_offset`` *int*, ``dead_letters`` *int*.
``promptprof_worker``
    Tag ``worker``. Fields ``ready`` (bool), ``partitions``, ``sink_backlog`` *int* (windows
    read or readable by the sink and not yet written), ``sink_oldest_unwritten_s`` (the age of
    the oldest of those, by Kafka timestamp; 0 when there is none), ``influx_write_failures``
    *int* (failed tries of the sink, the alerts and these points), ``influx_points_rejected``
    *int*, ``webhook_failed_attempts`` *int*, ``webhook_dead_lettered`` *int*,
    ``alerts_dropped`` *int*, ``health_lines_dropped`` *int*.
``promptprof_dead_letters``
    Tags ``worker``, ``stage`` (``worker``, ``sink``, ``alerts``), ``reason`` (a class:
    :func:`reason_class`), ``partition`` (worker stage only). Field ``count`` *int* (since the
    worker started).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptprof_processor.sink.lineprotocol import FieldValue, encode_line

PARTITION_MEASUREMENT = "promptprof_partition"
WORKER_MEASUREMENT = "promptprof_worker"
DEAD_LETTER_MEASUREMENT = "promptprof_dead_letters"

# (a substring of the reason, its class), first match wins
_REASON_CLASSES = (
    ("empty record", "empty_record"),
    ("oversized record", "oversized_record"),
    ("ahead of the worker's clock", "future_event"),
    ("internal error", "internal_error"),
    ("not JSON", "not_json"),
    ("envelope", "bad_envelope"),
    ("expected a JSON object", "bad_envelope"),
)


def reason_class(reason: str) -> str:
    """The class of a worker's dead-letter reason (its reasons hold values: one tag each would
    be a series per value): ``empty_record``, ``oversized_record``, ``future_event``,
    ``internal_error``, ``not_json``, ``bad_envelope``, else ``invalid_event``."""
    for part, name in _REASON_CLASSES:
        if part in reason:
            return name
    return "invalid_event"


@dataclass(frozen=True, slots=True)
class PartitionFigures:
    """One assigned partition of the calls topic."""

    partition: int
    lag_records: int
    lag_s: float
    events: int
    events_per_s: float
    late_events: int
    open_series: int
    overflow_events: int
    overflowed_prompts: int
    checkpoint_age_s: float
    next_offset: int
    dead_letters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One worker: its partitions, its sink and its alert delivery."""

    worker: str
    time_ns: int
    ready: bool
    partitions: list[PartitionFigures]
    sink_backlog: int = 0
    sink_oldest_unwritten_s: float = 0.0
    influx_write_failures: int = 0
    influx_points_rejected: int = 0
    sink_dead_letters: dict[str, int] = field(default_factory=dict)
    webhook_failed_attempts: int = 0
    webhook_dead_lettered: int = 0
    alerts_dropped: int = 0
    health_lines_dropped: int = 0

    @property
    def dead_letters(self) -> int:
        """Dead letters of every stage since the worker started."""
        return (sum(n for p in self.partitions for n in p.dead_letters.values())
                + sum(self.sink_dead_letters.values()) + self.webhook_dead_lettered)


def partition_fields(figures: PartitionFigures) -> dict[str, FieldValue | None]:
    """The fields of a ``promptprof_partition`` point."""
    return {
        "lag_records": figures.lag_records,
        "lag_s": float(figures.lag_s),
        "events": figures.events,
        "events_per_s": float(figures.events_per_s),
        "late_events": figures.late_events,
        "open_series": float(figures.open_series),
        "overflow_events": figures.overflow_events,
        "overflowed_prompts": float(figures.overflowed_prompts),
        "checkpoint_age_s": float(figures.checkpoint_age_s),
        "next_offset": figures.next_offset,
        "dead_letters": sum(figures.dead_letters.values()),
    }


def worker_fields(figures: WorkerFigures) -> dict[str, FieldValue | None]:
    """The fields of a ``promptprof_worker`` point."""
    return {
        "ready": figures.ready,
        "partitions": float(len(figures.partitions)),
        "sink_backlog": figures.sink_backlog,
        "sink_oldest_unwritten_s": float(figures.sink_oldest_unwritten_s),
        "influx_write_failures": figures.influx_write_failures,
        "influx_points_rejected": figures.influx_points_rejected,
        "webhook_failed_attempts": figures.webhook_failed_attempts,
        "webhook_dead_lettered": figures.webhook_dead_lettered,
        "alerts_dropped": figures.alerts_dropped,
        "health_lines_dropped": figures.health_lines_dropped,
    }


def worker_lines(figures: WorkerFigures) -> list[str]:
    """The line-protocol points of one sample."""
    now, worker = figures.time_ns, figures.worker
    lines = [encode_line(WORKER_MEASUREMENT, {"worker": worker}, worker_fields(figures), now)]
    for p in figures.partitions:
        tags = {"worker": worker, "partition": str(p.partition)}
        lines.append(encode_line(PARTITION_MEASUREMENT, tags, partition_fields(p), now))
        lines += [_dead_letter_line({**tags, "stage": "worker"}, reason, count, now)
                  for reason, count in sorted(p.dead_letters.items())]
    lines += [_dead_letter_line({"worker": worker, "stage": "sink"}, reason, count, now)
              for reason, count in sorted(figures.sink_dead_letters.items())]
    if figures.webhook_dead_lettered:
        lines.append(_dead_letter_line({"worker": worker, "stage": "alerts"}, "webhook_failed",
                                       figures.webhook_dead_lettered, now))
    return lines


def _dead_letter_line(tags: dict[str, str], reason: str, count: int, now: int) -> str:
    return encode_line(DEAD_LETTER_MEASUREMENT, {**tags, "reason": reason}, {"count": count}, now)
