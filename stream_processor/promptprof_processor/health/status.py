"""The pipeline's health as InfluxDB holds it: producers, workers, partitions, dead letters.

Read with InfluxQL (:class:`~promptprof_processor.report.influxql.InfluxQLClient`), so it works
wherever the dashboards do. ``promptprof status`` prints it; the pipeline alerts judge the
producers from it (a producer that stopped reporting has no event left to be judged by: only
what InfluxDB lacks shows it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from promptprof_processor.health.figures import (
    DEAD_LETTER_MEASUREMENT,
    PARTITION_MEASUREMENT,
    WORKER_MEASUREMENT,
)
from promptprof_processor.health.producers import PRODUCER_MEASUREMENT
from promptprof_processor.health.settings import PipelineAlertSettings
from promptprof_processor.report.influxql import InfluxQLClient, Row

PRODUCER_TAGS = ("service", "environment", "host", "pid")
RECENT_S = 300.0  # workers and partitions shown: those that reported within this


@dataclass(frozen=True, slots=True)
class ProducerStatus:
    """A producer's last report, how old it is, and whether it dropped events lately."""

    service: str
    environment: str
    host: str
    pid: str
    age_s: float
    final: bool
    stale: bool
    drops_in_window: float
    last: Row

    @property
    def key(self) -> str:
        """service/environment/host/pid."""
        return "/".join((self.service, self.environment, self.host, self.pid))


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """Everything ``promptprof status`` shows."""

    producers: list[ProducerStatus]
    workers: list[Row]
    partitions: list[Row]
    dead_letters: list[Row]


def _latest(measurement: str, tags: tuple[str, ...], within_s: float) -> str:
    group = ", ".join(f'"{t}"' for t in tags)
    return (f'SELECT * FROM "{measurement}" WHERE time > now() - {within_s:.0f}s '
            f"GROUP BY {group} ORDER BY time DESC LIMIT 1")


def read_producers(
    client: InfluxQLClient, settings: PipelineAlertSettings, now_ms: float | None = None,
) -> list[ProducerStatus]:
    """Every producer that reported within ``producers_lookback_s``: stale when its last report
    is older than ``producer_stale_s`` and was not its final one; its drops in the window are
    its last ``dropped`` minus that of its last report before ``drops_window_s`` (0 for a
    producer that started within the window)."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    before = _dropped(client, f"time > now() - {settings.producers_lookback_s:.0f}s AND "
                              f"time <= now() - {settings.drops_window_s:.0f}s")
    out = []
    for row in client.rows(_latest(PRODUCER_MEASUREMENT, PRODUCER_TAGS,
                                   settings.producers_lookback_s)):
        identity = (row["service"], row["environment"], row["host"], row["pid"])
        age_s = max(0.0, (now_ms - row["time"]) / 1000)
        final = bool(row.get("final"))
        out.append(ProducerStatus(
            *identity, age_s=age_s, final=final,
            stale=not final and age_s > settings.producer_stale_s,
            drops_in_window=(row.get("dropped") or 0.0) - before.get(identity, 0.0),
            last=row))
    return sorted(out, key=lambda p: p.key)


def _dropped(client: InfluxQLClient, where: str) -> dict[tuple[str, ...], float]:
    """Each producer's ``dropped`` at its last report within ``where``."""
    group = ", ".join(f'"{t}"' for t in PRODUCER_TAGS)
    rows = client.rows(f'SELECT last("dropped") AS dropped FROM "{PRODUCER_MEASUREMENT}" '
                       f"WHERE {where} GROUP BY {group}")
    return {tuple(r[t] for t in PRODUCER_TAGS): r["dropped"] or 0.0 for r in rows}


def read_status(client: InfluxQLClient, settings: PipelineAlertSettings) -> PipelineStatus:
    """The producers, and the workers, partitions and dead letters reported lately."""
    return PipelineStatus(
        producers=read_producers(client, settings),
        workers=client.rows(_latest(WORKER_MEASUREMENT, ("worker",), RECENT_S)),
        partitions=client.rows(_latest(PARTITION_MEASUREMENT, ("worker", "partition"), RECENT_S)),
        dead_letters=client.rows(
            f'SELECT last("count") AS "count" FROM "{DEAD_LETTER_MEASUREMENT}" '
            f'WHERE time > now() - {RECENT_S:.0f}s GROUP BY "worker", "stage", "partition", '
            '"reason"'),
    )


def as_dict(status: PipelineStatus) -> dict[str, Any]:
    """The status as JSON-native data."""
    return {
        "producers": [{"service": p.service, "environment": p.environment, "host": p.host,
                       "pid": p.pid, "age_s": round(p.age_s, 1), "final": p.final,
                       "stale": p.stale, "drops_in_window": p.drops_in_window, **p.last}
                      for p in status.producers],
        "workers": status.workers,
        "partitions": status.partitions,
        "dead_letters": status.dead_letters,
    }
