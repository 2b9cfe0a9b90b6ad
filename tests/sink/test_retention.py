"""Retention per window width: each width's windows go to its retention policy, which the v1
writer creates (or alters) with the configured duration; alerts stay in the default policy."""

from __future__ import annotations

import asyncio
import time

import pytest

from promptprof_processor.settings import (
    NS_PER_S,
    InfluxSettings,
    ProcessorSettings,
    RetentionSettings,
)
from promptprof_processor.sink.influx import RetryingWriter, V1Writer
from promptprof_processor.sink.lineprotocol import encode_line, window_lines
from promptprof_processor.sink.retention import (
    by_policy,
    ensure_configured_policies,
    policy_of,
    policy_statements,
)
from promptprof_processor.windows.figures import rollup
from promptprof_tools.stack import InfluxDB

from .fakes import window

POLICIES = {10: "promptprof_10s", 3600: "promptprof_3600s"}


def recent_windows() -> list[str]:
    """Two 10 s windows of a recent hour and their hourly rollup, as line protocol."""
    hour = time.time_ns() // NS_PER_S // 3600 * 3600 - 3600
    tens = [window(error_types=("timeout",)), window(start_s=10)]
    shift = hour * NS_PER_S - tens[0].window_start_ns
    tens = [w.model_copy(update={"window_start_ns": w.window_start_ns + shift,
                                 "window_end_ns": w.window_end_ns + shift}) for w in tens]
    hourly = rollup(tens, hour * NS_PER_S, (hour + 3600) * NS_PER_S)
    return [line for w in (*tens, hourly) for line in window_lines(w)]


def test_lines_go_to_the_policy_of_their_width_and_alerts_to_the_default() -> None:
    lines = recent_windows()
    alert = encode_line("llm_alert", {"width": "10s", "rule": "r"}, {"observed": 1.0}, 1)
    groups = by_policy([*lines, alert], POLICIES)
    # each width: its windows and their error point
    assert {k: len(v) for k, v in groups.items()} == {"promptprof_10s": 3,
                                                       "promptprof_3600s": 2, None: 1}
    assert groups[None] == [alert]
    assert policy_of(lines[0], {}) is None


def test_policies_are_created_or_altered_to_the_configured_durations() -> None:
    retention = RetentionSettings(enabled=True, durations={10: "7d"}, default_duration="400d")
    statements = policy_statements("db", retention, POLICIES, {"promptprof_10s"})
    assert statements == [
        'ALTER RETENTION POLICY "promptprof_10s" ON "db" DURATION 7d REPLICATION 1',
        'CREATE RETENTION POLICY "promptprof_3600s" ON "db" DURATION 400d REPLICATION 1',
    ]


@pytest.mark.parametrize("durations", [{10: "7 days"}, {10: "0d"}, {10: "1y"}])
def test_durations_must_be_influxql_durations(durations: dict[int, str]) -> None:
    with pytest.raises(ValueError, match="duration"):
        RetentionSettings(durations=durations)


def test_retention_is_off_by_default_and_names_a_policy_per_width() -> None:
    settings = ProcessorSettings()
    assert settings.retention.policies(settings.windows.all_widths_s) == {}
    on = RetentionSettings(enabled=True)
    assert on.policies([10, 60, 3600]) == {10: "promptprof_10s", 60: "promptprof_60s",
                                           3600: "promptprof_3600s"}


@pytest.mark.integration
def test_the_writer_keeps_each_width_in_its_policy(
    influxdb: InfluxDB, influx_database: str
) -> None:
    retention = RetentionSettings(enabled=True, durations={10: "7d", 3600: "400d"})
    settings = InfluxSettings(url=influxdb.url, database=influx_database)
    influxdb.query(f'CREATE RETENTION POLICY "promptprof_10s" ON "{influx_database}" '
                   "DURATION 1d REPLICATION 1")  # altered to the configured 7 days
    alert = encode_line("llm_alert", {"width": "10s"}, {"observed": 1.0}, time.time_ns())

    async def write() -> None:
        writer = RetryingWriter(V1Writer(settings, retention, [10, 3600]))
        try:
            await writer.write([*recent_windows(), alert])
        finally:
            await writer.close()

    asyncio.run(write())
    shown = influxdb.rows(f'SHOW RETENTION POLICIES ON "{influx_database}"', influx_database)
    durations = {r["name"]: r["duration"] for r in shown}
    assert durations["promptprof_10s"] == "168h0m0s"
    assert durations["promptprof_3600s"] == "9600h0m0s"

    def count(source: str) -> int:
        rows = influxdb.rows(f"SELECT count(calls) FROM {source}", influx_database)
        return int(rows[0]["count"]) if rows else 0

    assert count('"promptprof_10s"."llm_window"') == 2
    assert count('"promptprof_3600s"."llm_window"') == 1
    assert count('"llm_window"') == 0  # nothing in the default policy
    errors = influxdb.rows('SELECT count(errors) FROM "promptprof_10s"."llm_window_errors"',
                           influx_database)
    assert errors[0]["count"] == 1
    assert influxdb.rows('SELECT count(observed) FROM "llm_alert"', influx_database)


@pytest.mark.integration
def test_the_stack_sets_up_the_configured_policies_idempotently(
    influxdb: InfluxDB, influx_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``promptprof stack up`` runs, with retention turned on by the environment."""
    monkeypatch.setenv("PROMPTPROF_RETENTION__ENABLED", "true")
    monkeypatch.setenv("PROMPTPROF_RETENTION__DURATIONS", '{"10": "2d"}')

    def query(q: str) -> list[dict[str, object]]:
        return influxdb.rows(q, influx_database)

    first = ensure_configured_policies(query, influx_database)
    assert [s.split()[0] for s in first] == ["CREATE"] * 3
    again = ensure_configured_policies(query, influx_database)
    assert [s.split()[0] for s in again] == ["ALTER"] * 3
    durations = {r["name"]: r["duration"] for r in query(
        f'SHOW RETENTION POLICIES ON "{influx_database}"')}
    assert durations["promptprof_10s"] == "48h0m0s"
    assert durations["promptprof_60s"] == durations["promptprof_3600s"] == "720h0m0s"
    monkeypatch.setenv("PROMPTPROF_RETENTION__ENABLED", "false")
    assert ensure_configured_policies(query, influx_database) == []
