"""The columnar envelope (version 2): what the producer writes, and that the worker decides,
explains and aggregates its events exactly as it does the same events sent as rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from promptprof._envelope import (
    COLUMNS_VERSION,
    ROWS_VERSION,
    ColumnBatch,
    EnvelopeError,
    decode_batch,
    decode_record,
    encode_envelope,
    encode_rows,
)
from promptprof._event import CallEvent
from promptprof_processor.ingest.validation import CallColumns, validate_columns
from promptprof_processor.settings import WindowSettings
from tests.processor.runs import Runs
from tests.processor.test_validation import raw_call, raw_quality
from tests.processor.test_validation_equivalence import CALL_KEYS, values

T0 = 1_700_000_000_000_000_000
SETTINGS = WindowSettings(widths_s=[10, 60], label_dimensions=["tenant"])


def calls(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        raw_call(event_id=f"e{i}", start_time_unix_nano=T0 + i * 10**9, **fields)
        | {"promptprof.latency_ms": 10.0 + i}
        for i in range(count)
    ]


def test_call_events_travel_as_columns_with_shared_values_written_once() -> None:
    doc = orjson.loads(encode_envelope(calls(3)))
    assert doc["envelope_version"] == COLUMNS_VERSION and doc["count"] == 3
    fields = doc["fields"]
    assert fields["service.name"] == "svc"
    assert fields["promptprof.labels"] == {"tenant": "a"}
    assert fields["promptprof.latency_ms"] == [10.0, 11.0, 12.0]
    assert fields["event_id"] == ["e0", "e1", "e2"]


@pytest.mark.parametrize(
    "events",
    [
        [raw_quality()],
        [raw_call(extra_key=1)],
        [raw_call(), {k: v for k, v in raw_call().items() if k != "event_id"}],
        [raw_call(latency_ms=1.0)],  # a field name, not the wire key
        ["not an event"],
        [],
    ],
)
def test_events_the_columns_cannot_carry_exactly_travel_as_rows(events: list[Any]) -> None:
    doc = orjson.loads(encode_envelope(events))
    assert doc["envelope_version"] == ROWS_VERSION and doc["events"] == events


def test_a_key_left_out_of_some_events_is_filled_with_its_default() -> None:
    events = calls(2)
    events[0]["promptprof.status"] = "error"
    rows = decode_record(encode_envelope(events))
    assert [r["promptprof.status"] for r in rows] == ["error", "ok"]


def test_values_of_other_types_are_not_merged_into_one_shared_value() -> None:
    events = calls(2)
    events[0]["gen_ai.usage.input_tokens"] = 1
    events[1]["gen_ai.usage.input_tokens"] = True
    fields = orjson.loads(encode_envelope(events))["fields"]
    assert fields["gen_ai.usage.input_tokens"] == [1, True]


@pytest.mark.parametrize(
    ("fields", "count", "reason"),
    [
        ({"a": [1, 2]}, 3, "column 'a' has 2 values, count is 3"),
        ({}, -1, "'count' must be a non-negative integer"),
        ({}, "3", "'count' must be a non-negative integer"),
        ([], 1, "'fields' must be an object"),
    ],
)
def test_a_malformed_columnar_envelope_is_rejected_with_its_reason(
    fields: Any, count: Any, reason: str
) -> None:
    value = orjson.dumps(
        {"envelope": "promptprof.batch", "envelope_version": 2, "count": count, "fields": fields}
    )
    with pytest.raises(EnvelopeError, match=reason):
        decode_batch(value)


def test_one_bad_value_rejects_only_its_event_with_the_model_reason() -> None:
    events = calls(4)
    events[2]["promptprof.latency_ms"] = -1.0
    batch = decode_batch(encode_envelope(events))
    assert isinstance(batch, ColumnBatch)
    good, bad = validate_columns(batch)
    assert isinstance(good, list) and [r["event_id"] for r in good] == ["e0", "e1", "e3"]
    assert bad == [(events[2], "promptprof.latency_ms: Input should be greater than or equal to 0")]


def test_good_columns_are_validated_as_columns() -> None:
    batch = decode_batch(encode_envelope(calls(3)))
    assert isinstance(batch, ColumnBatch)
    good, bad = validate_columns(batch)
    assert isinstance(good, CallColumns) and bad == []
    assert good.fields["service"] == "svc" and good.fields["latency_ms"] == [10.0, 11.0, 12.0]
    assert good.fields["cost_usd"] is None and good.fields["sample_rate"] == 1.0


@st.composite
def call_batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Call events of one or a few series, with the wire keys mutated now and then."""
    count = draw(st.integers(1, 12))
    events = []
    for i in range(count):
        event = raw_call(
            event_id=f"e{i}",
            start_time_unix_nano=T0 + draw(st.integers(0, 150)) * 10**9,
            **{"promptprof.latency_ms": draw(st.floats(0, 1e5))},
        )
        event["promptprof.labels"] = {"tenant": draw(st.sampled_from(["a", "b"]))}
        if draw(st.booleans()):
            event["gen_ai.request.model"] = draw(st.sampled_from(["m", "n"]))
        for key, value in draw(st.lists(st.tuples(st.sampled_from(CALL_KEYS), values), max_size=2)):
            event[key] = value
        events.append(event)
    return events


def serialisable(encode: Callable[[list[Any]], bytes], events: list[Any]) -> bytes:
    try:
        return encode(events)
    except TypeError:  # an integer beyond 64 bits: the producer drops such events
        reject()
        raise


@settings(max_examples=300, deadline=None)
@given(call_batches(), st.integers(0, 200))
def test_columns_and_rows_give_the_same_windows_and_dead_letters(
    events: list[dict[str, Any]], now_s: int
) -> None:
    as_rows = serialisable(encode_rows, events)
    by_columns, by_rows = Runs(SETTINGS), Runs(SETTINGS)
    now = T0 + now_s * 10**9
    columns = by_columns.handle(0, encode_envelope(events), now)
    rows = by_rows.handle(0, as_rows, now)
    assert columns.accepted == rows.accepted
    assert columns.closed == rows.closed
    assert [d.reason for d in columns.dead] == [d.reason for d in rows.dead]
    for mine, theirs in zip(columns.dead, rows.dead, strict=True):
        assert orjson.loads(theirs.value).items() <= orjson.loads(mine.value).items()
    assert by_columns.run(0).windows.snapshot() == by_rows.run(0).windows.snapshot()


@settings(max_examples=200, deadline=None)
@given(call_batches())
def test_decoded_columns_are_the_events_the_model_reads(events: list[dict[str, Any]]) -> None:
    def model(raw: dict[str, Any]) -> CallEvent | str:
        try:
            return CallEvent.model_validate(raw)
        except ValueError as exc:
            return type(exc).__name__

    # as JSON carries them (orjson writes a non-finite float as null, whichever the envelope)
    as_rows = decode_record(serialisable(encode_rows, events))
    assert [model(r) for r in decode_record(encode_envelope(events))] == [model(e) for e in as_rows]
