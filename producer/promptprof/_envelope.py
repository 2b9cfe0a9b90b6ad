"""The batch envelope: one Kafka record carrying many events of one series.

A Faust worker spends about 100 µs per Kafka record, so one record per call would cap the
processor near 10,000 calls/s; an envelope of a few hundred events lifts that cap. Two wire
formats (orjson), both accepted by the processor:

* version 2, columnar, what the producer sends for call events::

    {"envelope": "promptprof.batch", "envelope_version": 2, "count": N,
     "fields": {"<key>": <every event's value> | [<event 0's value>, ..., <event N-1's value>]}}

  A field whose value is a JSON array is a column of ``count`` values; any other value is shared
  by every event (no event field is an array, so this is unambiguous). A key the producer left
  out of some events is filled with the field's default. Values shared by a series (service,
  prompt, model, labels) are written and validated once, and the worker reads whole columns,
  which is what lets one worker take well over 100,000 events/s.
* version 1, rows: ``{"envelope": "promptprof.batch", "envelope_version": 1, "events": [...]}``,
  used for quality events and for events the columnar form cannot carry exactly (keys outside
  the contract, required keys missing).

Each event is a :class:`promptprof._event.CallEvent` or :class:`promptprof._event.QualityEvent`
dict. A record holding one bare event object (``{"schema_version": 1, ...}``) is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import orjson

from promptprof._event import CallEvent

ENVELOPE_NAME = "promptprof.batch"
ROWS_VERSION = 1
COLUMNS_VERSION = 2

_REQUIRED = object()
# every wire key of a call event, and what an event that leaves it out means
_FILL: dict[str, Any] = {
    (info.alias or name): (
        _REQUIRED if info.is_required() else info.get_default(call_default_factory=True)
    )
    for name, info in CallEvent.model_fields.items()
}


class EnvelopeError(ValueError):
    """A record that is neither a known envelope nor a single event object."""


@dataclass(frozen=True, slots=True)
class ColumnBatch:
    """A decoded columnar envelope: ``fields`` maps each wire key to a column (a list of
    ``count`` values) or to the one value every event shares."""

    count: int
    fields: dict[str, Any]

    def rows(self, indices: range | list[int] | None = None) -> list[dict[str, Any]]:
        """The events as row dicts (all of them, or those at ``indices``)."""
        picked = range(self.count) if indices is None else indices
        items = self.fields.items()
        return [
            {key: value[i] if type(value) is list else value for key, value in items}
            for i in picked
        ]


def encode_envelope(events: list[dict[str, Any]]) -> bytes:
    """Serialise events into one envelope record value: columnar when it carries them exactly,
    rows otherwise."""
    fields = _columns(events)
    if fields is None:
        return encode_rows(events)
    return orjson.dumps(
        {
            "envelope": ENVELOPE_NAME,
            "envelope_version": COLUMNS_VERSION,
            "count": len(events),
            "fields": fields,
        }
    )


def encode_rows(events: list[dict[str, Any]]) -> bytes:
    """Serialise events into a version 1 (rows) envelope."""
    return orjson.dumps(
        {"envelope": ENVELOPE_NAME, "envelope_version": ROWS_VERSION, "events": events}
    )


def _columns(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The version 2 fields of call events, or None when some event does not fit the form."""
    if not events or set(map(type, events)) != {dict}:
        return None
    keys = set().union(*events)
    if not keys <= _FILL.keys():
        return None  # a quality event, or keys outside the contract
    fields: dict[str, Any] = {}
    for key, fill in _FILL.items():
        if key in keys:
            column = _column(events, key, fill)
            if column is None:
                return None
            fields[key] = column if _varies(column) else column[0]
        elif fill is _REQUIRED:
            return None
    return fields


def _column(events: list[dict[str, Any]], key: str, fill: Any) -> list[Any] | None:
    """Every event's value of ``key`` (``fill`` for an event without it); None when a required
    key is missing from some event."""
    if fill is not _REQUIRED:
        return list(map(dict.get, events, repeat(key), repeat(fill)))
    try:
        return list(map(itemgetter(key), events))
    except KeyError:
        return None


def _varies(column: list[Any]) -> bool:
    first = column[0]
    if type(first) is list or column.count(first) != len(column):
        return True
    return len(set(map(type, column))) > 1  # 1 == 1.0 == True: shared only of one type


def decode_record(value: bytes) -> list[Any]:
    """The raw events of a record value as row dicts (see :func:`decode_batch`)."""
    batch = decode_batch(value)
    return batch.rows() if isinstance(batch, ColumnBatch) else batch


def decode_batch(value: bytes) -> list[Any] | ColumnBatch:
    """The raw events of a record value: a version 2 envelope's columns, a version 1
    envelope's list, or a one-event list.

    Raises :class:`EnvelopeError` with the reason when the bytes are not JSON, or are JSON of an
    unknown shape or envelope version. The events themselves are not validated here.
    """
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EnvelopeError(f"expected a JSON object, got {type(doc).__name__}")
    if "envelope" in doc:
        return _envelope_events(doc)
    if "schema_version" in doc:
        return [doc]
    raise EnvelopeError("neither a batch envelope nor an event (no 'envelope' or 'schema_version')")


def _envelope_events(doc: dict[str, Any]) -> list[Any] | ColumnBatch:
    version = doc.get("envelope_version")
    if doc["envelope"] != ENVELOPE_NAME or version not in (ROWS_VERSION, COLUMNS_VERSION):
        raise EnvelopeError(f"unknown envelope {doc['envelope']!r} version {version!r}")
    if version == COLUMNS_VERSION:
        return _column_batch(doc)
    events = doc.get("events")
    if not isinstance(events, list):
        raise EnvelopeError("envelope 'events' must be a list")
    return events


def _column_batch(doc: dict[str, Any]) -> ColumnBatch:
    count, fields = doc.get("count"), doc.get("fields")
    if type(count) is not int or count < 0:
        raise EnvelopeError("envelope 'count' must be a non-negative integer")
    if not isinstance(fields, dict):
        raise EnvelopeError("envelope 'fields' must be an object")
    for key, value in fields.items():
        if type(value) is list and len(value) != count:
            raise EnvelopeError(f"column {key!r} has {len(value)} values, count is {count}")
    return ColumnBatch(count, fields)
