"""Hostile values against the real InfluxDB 1.x: every value a user can put in a service,
prompt id, version, model or label either reads back exactly from InfluxDB (tags, and the alert
``message`` string field that embeds them) or is refused by the producer; InfluxDB never refuses
a point for its content. Read back with InfluxQL, compared exactly."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptprof import Call, ConfigError, load_settings
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder, InvalidValue
from promptprof_processor.alerts.events import ALERT_MEASUREMENT, Alert, AlertWindow, alert_line
from promptprof_processor.settings import NS_PER_S, InfluxSettings, ProcessorSettings
from promptprof_processor.sink.consumer import WindowSink
from promptprof_processor.sink.influx import RetryingWriter, V1Writer
from promptprof_processor.sink.lineprotocol import WINDOW_MEASUREMENT, window_lines
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_tools.stack import InfluxDB, StackError

from .fakes import DeadLetters, window

pytestmark = pytest.mark.integration

HOSTILE = [
    "ends\\", "ends\\\\", "mid\\dle", "C:\\dir\\file", "x\\,y", "x\\ y", "x\\=y", "x\\\\y", "\\",
    "new\nline", "cr\rx", "tab\tx", 'quo"te"', "it's", "a,b", "a=b", "a b", " lead", "trail ",
    "=", ",", " ", "#hash", "emoji 😀🎉", "e\u0301", "nul\x00", "bell\x07", "ls\u2028",
    "bom\ufeff", "lone \ud800", "", "k" * 65_536, "x" * 256, "y" * 257,
]
POSITIONS = ["service", "prompt_id", "version", "model", "label"]
DIMENSION = "tenant"
_starts = itertools.count(1)


def producer_accepts(position: str, value: str) -> bool:
    """Whether the real producer sends a call with ``value`` at ``position`` (else it refuses
    it: a ConfigError for the service, a counted drop for the rest)."""
    if position == "service":
        try:
            load_settings(producer={"service_name": value})
        except ConfigError:
            return False
        return True
    spec: dict[str, Any] = {"prompt_id": "p", "version": "v1", "model": "m", "labels": {}}
    if position == "label":
        spec["labels"] = {DIMENSION: value}
    else:
        spec[position] = value
    try:
        call = Call(None, make_spec(**spec), 1.0)
        EventBuilder("svc", "test", False, None).build(call)
    except InvalidValue:
        return False
    except ValueError:  # make_spec: an empty prompt id or version, refused at decoration
        return False
    return True


def hostile_window(position: str, value: str) -> WindowAggregate:
    """A window (at its own start time) whose ``position`` holds ``value``."""
    start_s = 10 * next(_starts)
    if position == "label":
        return window(labels={DIMENSION: value} if value else {}, start_s=start_s)
    return window(**{position: value}, start_s=start_s)  # service, prompt_id, version, model


def read_tag(influxdb: InfluxDB, database: str, start_ns: int, tag: str) -> Any:
    rows = influxdb.rows(f'SELECT * FROM "{WINDOW_MEASUREMENT}" WHERE time = {start_ns}', database)
    assert len(rows) == 1, rows
    return rows[0].get(tag)  # a tag never written in the measurement has no column


def tag_of(position: str) -> str:
    return {"version": "prompt_version", "label": DIMENSION}.get(position, position)


async def write_all(influxdb: InfluxDB, database: str, windows: list[WindowAggregate]) -> None:
    """Write through the sink's own writer: InfluxDB must refuse nothing."""
    writer = RetryingWriter(V1Writer(InfluxSettings(url=influxdb.url, database=database)))
    try:
        lines = [line for w in windows for line in window_lines(w)]
        assert await writer.write_finding_refused(lines) == {}
    finally:
        await writer.close()


async def test_every_hostile_value_reads_back_exactly_or_is_refused_by_the_producer(
    influxdb: InfluxDB, influx_database: str
) -> None:
    accepted = [(p, v) for p in POSITIONS for v in HOSTILE if producer_accepts(p, v)]
    refused = {(p, v) for p in POSITIONS for v in HOSTILE} - set(accepted)
    # what line protocol cannot carry, and what does not fit, never reaches the pipeline
    for value in ["ends\\", "x\\,y", "new\nline", "lone \ud800", "k" * 65_536]:
        assert all((p, value) in refused for p in POSITIONS)
    assert ("label", "") in accepted and ("model", "") in accepted  # written as no tag
    assert ("prompt_id", "") in refused and ("service", "") in refused
    windows = [hostile_window(p, v) for p, v in accepted]
    await write_all(influxdb, influx_database, windows)
    for (position, value), w in zip(accepted, windows, strict=True):
        stored = read_tag(influxdb, influx_database, w.window_start_ns, tag_of(position))
        assert stored == (value or None), (position, value)


@pytest.mark.parametrize(
    "value", ["ends\\", "ends\\\\", "ends\\\\\\", "new\nline", "x\\ \nyz"]
)
def test_a_newline_or_a_final_backslash_does_not_read_back_from_influxdb_1x(
    influxdb: InfluxDB, influx_database: str, value: str
) -> None:
    """Why the rule exists: written as line protocol would (escaping commas, equals signs and
    spaces), InfluxDB refuses the point or reads back something else. (The rest of the rule,
    a backslash before a backslash, comma, equals sign or space, is for InfluxDB 3's parser.)"""
    escaped = value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
    try:
        influxdb.write(f"probe,t={escaped} v=1 {next(_starts)}", influx_database)
    except StackError as refused:
        assert "unable to parse" in str(refused)
        return
    rows = influxdb.rows('SELECT * FROM "probe"', influx_database)
    assert value not in [row.get("t") for row in rows]


async def test_alert_messages_embedding_any_value_read_back_exactly(
    influxdb: InfluxDB, influx_database: str
) -> None:
    message_values = [v for v in HOSTILE if "\ud800" not in v]
    series = window().series
    alerts = [alert(series, f"p95 of {value!s} is 2x its baseline", i)
              for i, value in enumerate(message_values, start=1)]
    writer = RetryingWriter(V1Writer(InfluxSettings(url=influxdb.url, database=influx_database)))
    try:
        assert await writer.write_finding_refused([alert_line(a) for a in alerts]) == {}
    finally:
        await writer.close()
    rows = influxdb.rows(f'SELECT "message" FROM "{ALERT_MEASUREMENT}"', influx_database)
    assert sorted(r["message"] for r in rows) == sorted(a.message for a in alerts)


def alert(series: Any, message: str, index: int) -> Alert:
    end = 1_700_000_000 * NS_PER_S + index * 10 * NS_PER_S
    return Alert(
        alert_id=f"a{index}", fingerprint="f", state="firing", kind="slo",
        rule="slo.latency_p95_ms", metric="latency_p95_ms", severity="warning", series=series,
        window=AlertWindow(start_ns=end - 10 * NS_PER_S, end_ns=end, width_s=10),
        started_ns=end, observed=2.0, baseline=1.0, threshold=1.5, direction="above",
        message=message,
    )


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.text(alphabet=st.sampled_from('ab\\ ,="\'\n\r\t#😀é\x00'), max_size=10)
    | st.text(max_size=20),
    position=st.sampled_from(POSITIONS),
)
async def test_random_values_read_back_exactly_or_are_refused(
    influxdb: InfluxDB, influx_database: str, value: str, position: str
) -> None:
    if not producer_accepts(position, value):
        return
    w = hostile_window(position, value)
    await write_all(influxdb, influx_database, [w])
    stored = read_tag(influxdb, influx_database, w.window_start_ns, tag_of(position))
    assert stored == (value or None)


async def test_a_sink_given_an_unwritable_value_dead_letters_it_instead_of_writing(
    influxdb: InfluxDB, influx_database: str, settings_for: Callable[..., ProcessorSettings]
) -> None:
    """A record from another producer bypassing the contract: the sink refuses it itself."""
    good, bad = hostile_window("prompt_id", "fine"), hostile_window("prompt_id", "ends\\")
    sink = WindowSink(settings_for(database=influx_database), group_id="unit")
    dead = DeadLetters()
    try:
        await sink.write([good.to_bytes(), bad.to_bytes()], dead)
    finally:
        await sink.writer.close()
    assert [value for _, value, _ in dead.sent] == [bad.to_bytes()]
    assert sink.dead_letters == {"unwritable": 1}
    assert read_tag(influxdb, influx_database, good.window_start_ns, "prompt_id") == "fine"
