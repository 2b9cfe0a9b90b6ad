"""The batch envelope: one Kafka record carrying many events of one series.

A Faust worker spends about 100 µs per Kafka record, so one record per call would cap the
processor near 10,000 calls/s; an envelope of a few hundred events lifts that cap. Wire format
(orjson)::

    {"envelope": "promptprof.batch", "envelope_version": 1, "events": [<event>, ...]}

Each ``<event>`` is a :class:`promptprof.event.CallEvent` or :class:`promptprof.event.QualityEvent`
dict. A record holding one bare event object (``{"schema_version": 1, ...}``) is accepted too.
"""

from __future__ import annotations

from typing import Any

import orjson

ENVELOPE_NAME = "promptprof.batch"
ENVELOPE_VERSION = 1


class EnvelopeError(ValueError):
    """A record that is neither a known envelope nor a single event object."""


def encode_envelope(events: list[dict[str, Any]]) -> bytes:
    """Serialise events into one envelope record value."""
    return orjson.dumps(
        {"envelope": ENVELOPE_NAME, "envelope_version": ENVELOPE_VERSION, "events": events}
    )


def decode_record(value: bytes) -> list[Any]:
    """The raw events of a record value: an envelope's list, or a one-event list.

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
        if doc["envelope"] != ENVELOPE_NAME or doc.get("envelope_version") != ENVELOPE_VERSION:
            raise EnvelopeError(
                f"unknown envelope {doc.get('envelope')!r} version {doc.get('envelope_version')!r}"
            )
        events = doc.get("events")
        if not isinstance(events, list):
            raise EnvelopeError("envelope 'events' must be a list")
        return events
    if "schema_version" in doc:
        return [doc]
    raise EnvelopeError("neither a batch envelope nor an event (no 'envelope' or 'schema_version')")
