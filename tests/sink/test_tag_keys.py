"""Label dimensions become InfluxDB tag keys: names that collide with promptprof's own tags,
with InfluxDB's reserved keys, or that line protocol cannot carry are refused when the
configuration loads, with the fix; the processor dead-letters events the producer refuses."""

from __future__ import annotations

import pytest

from promptprof import ConfigError, load_settings
from promptprof_processor.alerts.events import alert_tags
from promptprof_processor.ingest.validation import validate_events
from promptprof_processor.settings import ALERT_TAG_KEYS, WINDOW_TAG_KEYS, ProcessorSettings
from promptprof_processor.sink.lineprotocol import window_tags

from .fakes import window
from .test_hostile_values import alert


@pytest.mark.parametrize(
    ("name", "problem", "fix"),
    [
        ("state", "is a tag promptprof writes itself", "(e.g. 'label_state')"),
        ("rule", "is a tag promptprof writes itself", "(e.g. 'label_rule')"),
        ("severity", "is a tag promptprof writes itself", "(e.g. 'label_severity')"),
        ("error_type", "is a tag promptprof writes itself", "(e.g. 'label_error_type')"),
        ("prompt_id", "is a tag promptprof writes itself", "(e.g. 'label_prompt_id')"),
        ("time", "is a key InfluxDB reserves", "(e.g. 'label_time')"),
        ("_field", "is a key InfluxDB reserves", "(e.g. 'label_field')"),
        ("_measurement", "is a key InfluxDB reserves", "(e.g. 'label_measurement')"),
        ("ends\\", "holds a newline or a backslash before", "in label_dimensions"),
        ("new\nline", "holds a newline or a backslash before", "in label_dimensions"),
        ("k" * 65, "is longer than 64 characters", "in label_dimensions"),
    ],
)
def test_colliding_or_unwritable_dimension_names_are_refused_with_the_fix(
    name: str, problem: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(cls=ProcessorSettings, windows={"label_dimensions": ["tenant", name]})
    message = str(raised.value)
    assert "windows.label_dimensions (env PROMPTPROF_WINDOWS__LABEL_DIMENSIONS)" in message
    assert f"label dimension {name!r} {problem}" in message
    assert "rename the label where the service sets it and in label_dimensions" in message
    assert fix in message


@pytest.mark.parametrize("name", ["tenant", "Time", "region name", "a,b=c", "t\\x", "😀"])
def test_other_dimension_names_are_accepted(name: str) -> None:
    settings = load_settings(cls=ProcessorSettings, windows={"label_dimensions": [name]})
    assert settings.windows.label_dimensions == [name]


def test_the_reserved_tag_keys_are_the_ones_windows_and_alerts_write() -> None:
    w = window("p", error_types=("Timeout",))
    assert window_tags(w).keys() | {"error_type"} == WINDOW_TAG_KEYS
    assert alert_tags(alert(w.series, "m", 1)).keys() == ALERT_TAG_KEYS


def test_the_processor_dead_letters_values_the_producer_refuses() -> None:
    base = {"schema_version": 1, "event_id": "e", "start_time_unix_nano": 1,
            "service.name": "svc", "promptprof.prompt.id": "p",
            "promptprof.prompt.version": "v1", "promptprof.latency_ms": 1.0}
    hostile = [{"promptprof.prompt.id": "ends\\"}, {"service.name": "a\nb"},
               {"gen_ai.request.model": "x\\,y"}, {"promptprof.prompt.version": "v\n"},
               {"error.type": "E\\", "promptprof.status": "error"},
               {"promptprof.labels": {"tenant": "a\\ b"}}]
    good, bad = validate_events([{**base, **h} for h in hostile] + [base])
    assert len(good) == 1 and len(bad) == len(hostile)
    assert all("should match pattern" in reason for _, reason in bad)
