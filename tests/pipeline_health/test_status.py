"""``promptprof status`` reads the figures from a real InfluxDB: a producer that stopped
reporting is stale (exit 1), one that closed is not; workers and partitions are shown."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

from promptprof import load_settings
from promptprof._selfstats import stats_event
from promptprof_processor.health.figures import PartitionFigures, WorkerFigures, worker_lines
from promptprof_processor.health.producers import parse_stats
from promptprof_tools.stack import InfluxDB

pytestmark = pytest.mark.integration

NS = 1_000_000_000


def _producer_line(service: str, age_s: float, *, final: bool = False, dropped: int = 0) -> str:
    settings = load_settings(producer={"service_name": service, "environment": "prod"})
    event = stats_event({"sent_events": 50, "dropped": dropped}, settings,
                        started_ns=time.time_ns(), final=final)
    event["time_unix_nano"] = time.time_ns() - int(age_s * NS)
    parsed = parse_stats(orjson.dumps(event))
    assert parsed is not None
    return parsed.line()


def _fill(influx: InfluxDB, database: str, *, stale: bool) -> None:
    lines = [_producer_line("fresh", 1), _producer_line("closed", 600, final=True)]
    if stale:
        lines.append(_producer_line("gone", 600))
    figures = WorkerFigures("w1", time.time_ns(), True,
                            [PartitionFigures(0, 3, 0.5, 10, 2.0, 0, 1, 0, 0, 1.0, 13)])
    influx.write(lines + worker_lines(figures), database)


def _run(influx: InfluxDB, database: str, *args: str) -> tuple[int, str]:
    """``promptprof status`` as a command, configured by the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROF_")}
    env |= {"PROMPTPROF_INFLUX__URL": influx.url, "PROMPTPROF_INFLUX__DATABASE": database,
            "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "promptprof_tools.cli", "status", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout


def test_status_json_marks_the_silent_producer_stale(
    influxdb: InfluxDB, influx_database: str,
) -> None:
    _fill(influxdb, influx_database, stale=True)
    code, out = _run(influxdb, influx_database, "--json")
    status = orjson.loads(out)
    producers = {p["service"]: p for p in status["producers"]}
    assert producers["gone"]["stale"] and not producers["fresh"]["stale"]
    assert producers["closed"]["final"] and not producers["closed"]["stale"]
    assert [(w["worker"], w["ready"]) for w in status["workers"]] == [("w1", True)]
    assert status["partitions"][0]["lag_records"] == 3
    assert code == 1


def test_status_tables_and_exit_zero_when_all_is_well(
    influxdb: InfluxDB, influx_database: str,
) -> None:
    _fill(influxdb, influx_database, stale=False)
    code, out = _run(influxdb, influx_database)
    assert code == 0
    assert "Producers" in out and "Partitions" in out and "no problem found" in out
