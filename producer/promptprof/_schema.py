"""The call-event JSON Schema, exported to ``producer/promptprof/schemas/`` and checked in tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from promptprof._event import CallEvent, QualityEvent

SCHEMA_FILE = Path(__file__).parent / "schemas" / "call_event.v1.json"


def event_schema() -> dict[str, Any]:
    """JSON Schema of what one record may carry: an envelope or a single event."""
    call = CallEvent.model_json_schema(by_alias=True)
    quality = QualityEvent.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "promptprof call events, schema version 1",
        "$defs": {"CallEvent": call, "QualityEvent": quality},
        "oneOf": [
            {
                "type": "object",
                "description": "batch envelope: many events of one series in one Kafka record",
                "required": ["envelope", "envelope_version", "events"],
                "properties": {
                    "envelope": {"const": "promptprof.batch"},
                    "envelope_version": {"const": 1},
                    "events": {
                        "type": "array",
                        "items": {
                            "anyOf": [
                                {"$ref": "#/$defs/CallEvent"},
                                {"$ref": "#/$defs/QualityEvent"},
                            ]
                        },
                    },
                },
            },
            {"$ref": "#/$defs/CallEvent"},
            {"$ref": "#/$defs/QualityEvent"},
        ],
    }


def render_schema() -> bytes:
    """The schema file's exact bytes."""
    return orjson.dumps(event_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schema(out: Path | None) -> int:
    """Write the schema to ``out`` (or stdout)."""
    data = render_schema()
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return 0
