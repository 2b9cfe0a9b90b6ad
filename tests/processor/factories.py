"""Event factories for the stream-processor tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from promptprof._event import CallEvent, QualityEvent
from promptprof_processor.ingest.validation import (
    CallColumns,
    CallRecord,
    QualityRecord,
    validate_events,
)
from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import CALL_FIELDS, QUALITY_FIELDS, Accumulator
from promptprof_processor.windows.sketches import RELATIVE_ACCURACY

# A time aligned to every test window width (10 s, 60 s, 3600 s).
T0_S = 1_699_999_200
T0 = T0_S * NS_PER_S

_counter = iter(range(10**12))


def ns(seconds: float) -> int:
    """Nanoseconds since T0."""
    return T0 + round(seconds * NS_PER_S)


def call(at_s: float = 0.0, latency_ms: float = 100.0, **fields: Any) -> CallRecord:
    """A validated call event ``at_s`` seconds after T0."""
    values: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"e{next(_counter)}",
        "start_time_unix_nano": ns(at_s),
        "service": "svc",
        "prompt_id": "summarise",
        "prompt_version": "v1",
        "request_model": "gpt-4o-mini",
        "latency_ms": latency_ms,
    }
    values.update(fields)
    return cast(CallRecord, _record(CallEvent(**values)))


def quality(at_s: float, score: float, **fields: Any) -> QualityRecord:
    """A validated quality event scoring a call that started ``at_s`` seconds after T0."""
    values: dict[str, Any] = {
        "kind": "quality",
        "schema_version": 1,
        "event_id": f"q{next(_counter)}",
        "start_time_unix_nano": ns(at_s),
        "service": "svc",
        "prompt_id": "summarise",
        "prompt_version": "v1",
        "request_model": "gpt-4o-mini",
        "quality_score": score,
        "quality_metric": "judge",
    }
    values.update(fields)
    return cast(QualityRecord, _record(QualityEvent(**values)))


def _record(event: CallEvent | QualityEvent) -> object:
    """The record the processor's validation makes of the event's wire form."""
    good, bad = validate_events([event.model_dump(by_alias=True)])
    assert not bad, bad
    return good[0]


def add_calls(
    acc: Accumulator, records: Sequence[CallRecord], thresholds_ms: Sequence[float] = ()
) -> None:
    """Aggregate validated call records into ``acc`` (counting calls over ``thresholds_ms``)."""
    acc.add_calls(CallColumns.of_records(records, CALL_FIELDS), thresholds_ms)


def add_quality(acc: Accumulator, records: Sequence[QualityRecord]) -> None:
    """Aggregate validated quality records into ``acc``."""
    rows = cast(Sequence[CallRecord], records)
    acc.add_quality(CallColumns.of_records(rows, QUALITY_FIELDS))


def within_sketch_error(estimate: float, exact: float) -> bool:
    """``estimate`` is within the sketches' 1% relative accuracy of ``exact``."""
    return abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 1e-9
