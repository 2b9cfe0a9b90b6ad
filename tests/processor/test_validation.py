"""Validation of raw events into call and quality events."""

from __future__ import annotations

from typing import Any

from promptprof._event import CallEvent, QualityEvent
from promptprof_processor.ingest.validation import validate_events


def raw_call(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e1",
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "service.name": "svc",
        "promptprof.prompt.id": "p",
        "promptprof.prompt.version": "v1",
        "gen_ai.request.model": "m",
        "promptprof.latency_ms": 12.5,
        "promptprof.labels": {"tenant": "a"},
    }
    event.update(fields)
    return event


def raw_quality(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "quality",
        "schema_version": 1,
        "event_id": "e1",
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "service.name": "svc",
        "promptprof.prompt.id": "p",
        "promptprof.prompt.version": "v1",
        "promptprof.quality.score": 0.7,
        "promptprof.quality.metric": "judge",
    }
    event.update(fields)
    return event


def test_a_clean_batch_validates_in_order() -> None:
    raws = [raw_call(), raw_quality(), raw_call(event_id="e2")]
    good, bad = validate_events(raws)
    assert bad == []
    assert ["kind" in e for e in good] == [False, True, False]
    first = good[0]
    assert (first["latency_ms"], first["labels"]) == (12.5, {"tenant": "a"})
    assert first["request_model"] == "m"
    # a record holds the model's fields, defaults filled in, by field name
    models = [CallEvent.model_validate(raws[0]), QualityEvent.model_validate(raws[1])]
    assert good[:2] == [m.model_dump() for m in models]


def test_bad_events_are_split_off_with_reasons() -> None:
    negative = raw_call(**{"promptprof.latency_ms": -1})
    no_service = raw_call()
    del no_service["service.name"]
    raws: list[Any] = [raw_call(), negative, "not an object", no_service, raw_quality(), None]
    good, bad = validate_events(raws)
    assert ["kind" in e for e in good] == [False, True]
    assert [raw for raw, _ in bad] == [negative, "not an object", no_service, None]
    reasons = [reason for _, reason in bad]
    assert reasons[0].startswith("promptprof.latency_ms: Input should be greater than or equal")
    assert reasons[1] == "event: Input should be a valid dictionary or instance of CallEvent"
    assert reasons[2] == "service.name: Field required"


def test_a_quality_event_is_validated_as_one() -> None:
    good, bad = validate_events([raw_quality(**{"promptprof.quality.score": 2})])
    assert good == []
    assert bad[0][1].startswith("promptprof.quality.score: Input should be less than or equal")


def test_reasons_are_capped() -> None:
    _, bad = validate_events([{"schema_version": 2}])
    assert bad[0][1].count(";") == 2


def test_non_finite_numbers_and_unknown_schema_versions_are_bad() -> None:
    raws = [raw_call(**{"promptprof.latency_ms": float("nan")}), raw_call(schema_version=2)]
    good, bad = validate_events(raws)
    assert good == [] and len(bad) == 2


def test_empty_batch() -> None:
    assert validate_events([]) == ([], [])
