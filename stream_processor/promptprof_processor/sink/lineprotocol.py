"""InfluxDB line protocol for closed windows, used with both the v1 and the v2 write API.

Measurements (timestamp = window start in ns, so a re-written window overwrites its point):

``llm_window``
    Tags: ``service``, ``prompt_id``, ``prompt_version``, ``model``, ``width`` (``"10s"``,
    ``"60s"``, ``"3600s"``) and one tag per configured label dimension (omitted when empty).
    Fields (float unless marked *int*; a field is omitted when its figure is undefined, e.g.
    no TTFT in the window):

    - ``events`` *int* (events received), ``calls`` (estimate, weighted by 1/sample_rate),
      ``errors``, ``error_rate``, ``late_events`` *int*
    - ``latency_p50_ms``, ``latency_p90_ms``, ``latency_p95_ms``, ``latency_p99_ms``,
      ``latency_max_ms``; the same for ``ttft_*_ms``, and ``ttft_calls``
    - ``input_tokens_sum``, ``input_tokens_mean``, ``input_tokens_p95``,
      ``input_tokens_calls``; the same for ``output_tokens_*``
    - ``cost_usd_sum``, ``cost_per_call_usd``, ``cost_known_calls``, ``cost_unknown_calls``
    - ``quality_mean``, ``quality_p10``, ``quality_scored``

``llm_window_errors``
    The tags of ``llm_window`` plus ``error_type``; field ``errors`` (weighted). One point per
    error type seen in the window. (A re-processed window overwrites the types it has, but a
    type that disappeared keeps its old point.)

Sketches are not written; they travel in
:class:`~promptprof_processor.windows.figures.WindowAggregate`.

Escaping, checked against a real InfluxDB 1.x by writing and reading back
(``tests/sink/test_hostile_values.py``): commas and spaces in measurements; commas, equals signs
and spaces in tag keys, tag values and field keys; double quotes and backslashes in string field
values, which may hold newlines and any other character. A tag key or value is written only when
it is :data:`promptprof._event.TAG_SAFE` (no newline, no backslash before a backslash, comma,
equals sign, space or the end): InfluxDB 1.x refuses a tag ending in a backslash and cannot hold a
newline, and parsers that read ``\\\\`` as one backslash would read the rest differently. The
producer refuses such values and the processor dead-letters them; the encoder raises
``ValueError`` rather than write something else than it was given. Every other character (tab,
carriage return, quotes, emoji, control characters) is written as is and reads back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from promptprof._event import line_protocol_problem, unicode_problem
from promptprof_processor.windows.figures import Percentiles, TokenStats, WindowAggregate

WINDOW_MEASUREMENT = "llm_window"
ERRORS_MEASUREMENT = "llm_window_errors"

FieldValue = int | float | str | bool

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": r"\\"})


def _checked(text: str) -> str:
    problem = line_protocol_problem(text)
    if problem is not None:
        raise ValueError(f"{text[:60]!r} {problem}")
    return text


def escape_measurement(name: str) -> str:
    """A measurement name escaped for line protocol; ValueError when it cannot be written."""
    return _checked(name).translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key escaped for line protocol; ValueError when it cannot
    be written exactly."""
    return _checked(text).translate(_KEY_ESCAPES)


def escape_string(text: str) -> str:
    """A string field value, quoted and escaped for line protocol; ValueError when it is not
    valid Unicode."""
    problem = unicode_problem(text)
    if problem is not None:
        raise ValueError(f"a string field {problem}")
    return f'"{text.translate(_STRING_ESCAPES)}"'


def _field_value(value: FieldValue) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return escape_string(value)


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue | None],
    timestamp_ns: int,
) -> str:
    """One line of line protocol; tags with empty values and None or non-finite fields are
    left out, tags are sorted by key. Raises ValueError when no field is left or an element
    cannot be written exactly."""
    tag_part = "".join(
        f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if k and v
    )
    encoded = ((k, _field_value(v)) for k, v in fields.items() if v is not None)
    field_part = ",".join(f"{escape_key(k)}={v}" for k, v in encoded if v is not None)
    if not field_part:
        raise ValueError(f"a {measurement} point needs at least one field")
    return f"{escape_measurement(measurement)}{tag_part} {field_part} {timestamp_ns}"


def window_tags(window: WindowAggregate) -> dict[str, str]:
    """The tag set of a window's points."""
    series = window.series
    return {
        **series.labels,
        "service": series.service,
        "prompt_id": series.prompt_id,
        "prompt_version": series.prompt_version,
        "model": series.model,
        "width": f"{window.width_s}s",
    }


def window_fields(window: WindowAggregate) -> dict[str, FieldValue | None]:
    """The fields of a window's ``llm_window`` point (None where undefined)."""
    return {
        "events": window.events,
        "calls": float(window.calls),
        "errors": float(window.errors),
        "error_rate": _float(window.error_rate),
        "late_events": window.late_events,
        **_percentile_fields("latency", window.latency_ms),
        **_percentile_fields("ttft", window.ttft_ms),
        "ttft_calls": float(window.ttft_calls),
        **_token_fields("input_tokens", window.input_tokens),
        **_token_fields("output_tokens", window.output_tokens),
        "cost_usd_sum": float(window.cost_usd_sum),
        "cost_per_call_usd": _float(window.cost_per_call_usd),
        "cost_known_calls": float(window.cost_known_calls),
        "cost_unknown_calls": float(window.cost_unknown_calls),
        "quality_mean": _float(window.quality_mean),
        "quality_p10": _float(window.quality_p10),
        "quality_scored": float(window.quality_scored),
    }


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _percentile_fields(prefix: str, figures: Percentiles | None) -> dict[str, float]:
    if figures is None:
        return {}
    return {f"{prefix}_{name}_ms": float(v) for name, v in figures.model_dump().items()}


def _token_fields(prefix: str, figures: TokenStats | None) -> dict[str, float]:
    if figures is None:
        return {}
    return {f"{prefix}_{name}": float(v) for name, v in figures.model_dump().items()}


def window_lines(window: WindowAggregate) -> list[str]:
    """The line protocol lines of one closed window: its figures and its errors by type."""
    tags = window_tags(window)
    start = window.window_start_ns
    lines = [encode_line(WINDOW_MEASUREMENT, tags, window_fields(window), start)]
    for error_type, errors in sorted(window.errors_by_type.items()):
        error_tags = {**tags, "error_type": error_type}
        lines.append(encode_line(ERRORS_MEASUREMENT, error_tags, {"errors": float(errors)}, start))
    return lines


def render_windows(windows: Iterable[WindowAggregate]) -> bytes:
    """A write request body (UTF-8 line protocol, one point per line) for closed windows."""
    return "\n".join(line for w in windows for line in window_lines(w)).encode()
