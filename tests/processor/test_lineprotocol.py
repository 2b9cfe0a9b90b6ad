"""Line protocol rendering and escaping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.settings import NS_PER_S
from promptprof_processor.sink.lineprotocol import (
    ERRORS_MEASUREMENT,
    WINDOW_MEASUREMENT,
    encode_line,
    escape_key,
    escape_measurement,
    escape_string,
    render_windows,
    window_lines,
)
from promptprof_processor.windows.figures import Accumulator, SeriesTags, WindowAggregate

from .factories import T0, add_calls, call

Parsed = tuple[str, dict[str, str], dict[str, str], int]


def _take(line: str, i: int, stops: str, specials: str) -> tuple[str, int]:
    """Read an unquoted element up to an unescaped stop character (InfluxDB 2.x rules)."""
    out = []
    while i < len(line) and line[i] not in stops:
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in specials + "\\":
            i += 1
        out.append(line[i])
        i += 1
    return "".join(out), i


def _take_value(line: str, i: int) -> tuple[str, int]:
    if line[i] != '"':
        return _take(line, i, ", ", "")
    out, i = [], i + 1
    while line[i] != '"':
        if line[i] == "\\" and line[i + 1] in '"\\':
            i += 1
        out.append(line[i])
        i += 1
    return "".join(out), i + 1


def parse(line: str) -> Parsed:
    """A small reference parser of one line of line protocol."""
    measurement, i = _take(line, 0, ", ", ", ")
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _take(line, i + 1, "=", ",= ")
        tags[key], i = _take(line, i + 1, ", ", ",= ")
    fields: dict[str, str] = {}
    separator = " "
    while line[i] == separator:
        key, i = _take(line, i + 1, "=", ",= ")
        fields[key], i = _take_value(line, i + 1)
        separator = ","
    return measurement, tags, fields, int(line[i + 1 :])


text = st.text(alphabet=st.sampled_from('ab ,="\\=é\u2603'), min_size=1, max_size=12)


@given(text, text, text, text, text)
def test_escaped_elements_parse_back_exactly(
    measurement: str, key: str, value: str, field: str, string: str
) -> None:
    line = encode_line(measurement, {key: value}, {field: string, "n": 3}, 42)
    assert parse(line) == (measurement, {key: value}, {field: string, "n": "3i"}, 42)


def test_escaping_examples() -> None:
    assert escape_measurement("a b,c=d") == r"a\ b\,c=d"
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key("C:\\dir") == "C:\\dir"  # a lone backslash before a letter stays
    assert escape_key("ends\\") == "ends\\\\"
    assert escape_key("x\\,y") == "x\\\\\\,y"
    assert escape_key("two\nlines\t") == r"two\nlines\t"
    assert escape_string('say "hi" \\o/') == r'"say \"hi\" \\o/"'


def test_field_types_and_omissions() -> None:
    line = encode_line(
        "m",
        {"b": "2", "a": "1", "empty": ""},
        {"i": 3, "f": 1.5, "whole": 2.0, "t": True, "s": "x", "none": None, "nan": float("nan")},
        7,
    )
    assert line == 'm,a=1,b=2 i=3i,f=1.5,whole=2.0,t=true,s="x" 7'
    assert encode_line("m", {}, {"tiny": 1e-07}, 1) == "m tiny=1e-07 1"


def test_a_point_needs_a_field() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        encode_line("m", {"a": "1"}, {"x": None, "y": float("inf")}, 1)


def window() -> WindowAggregate:
    acc = Accumulator()
    add_calls(acc,
        [
            call(latency_ms=100, ttft_ms=20.0, input_tokens=10, cost_usd=0.5),
            call(latency_ms=300, status="error", error_type="Rate Limit"),
            call(latency_ms=200, status="error", error_type="Timeout", quality_score=0.5),
        ]
    )
    acc.add_late(10, 4)
    tags = SeriesTags(
        service="svc",
        prompt_id="summarise email",
        prompt_version="v1",
        model="gpt-4o-mini",
        labels={"tenant": "acme,inc"},
    )
    return acc.finish(tags, T0, T0 + 10 * NS_PER_S, late_events=4)


def test_window_lines() -> None:
    lines = window_lines(window())
    assert len(lines) == 3
    measurement, tags, fields, timestamp = parse(lines[0])
    assert measurement == WINDOW_MEASUREMENT
    assert timestamp == T0
    assert tags == {
        "model": "gpt-4o-mini",
        "prompt_id": "summarise email",
        "prompt_version": "v1",
        "service": "svc",
        "tenant": "acme,inc",
        "width": "10s",
    }
    assert list(tags) == sorted(tags)
    assert fields["events"] == "3i" and fields["late_events"] == "4i"
    assert fields["calls"] == "3.0" and fields["errors"] == "2.0"
    assert fields["latency_max_ms"] == "300.0"
    assert float(fields["latency_p50_ms"]) == pytest.approx(200, rel=0.01)
    assert fields["ttft_calls"] == "1.0" and "ttft_p99_ms" in fields
    assert fields["input_tokens_sum"] == "10.0" and "output_tokens_sum" not in fields
    assert fields["cost_per_call_usd"] == "0.5" and fields["cost_unknown_calls"] == "2.0"
    assert fields["quality_mean"] == "0.5"
    errors = [parse(line) for line in lines[1:]]
    assert [(m, t["error_type"], f) for m, t, f, _ in errors] == [
        (ERRORS_MEASUREMENT, "Rate Limit", {"errors": "1.0"}),
        (ERRORS_MEASUREMENT, "Timeout", {"errors": "1.0"}),
    ]
    assert all(t.items() > tags.items() and ts == T0 for _, t, _, ts in errors)


def test_render_windows_joins_lines() -> None:
    body = render_windows([window(), window()])
    assert body.count(b"\n") == 5
    assert body.decode().split("\n")[:3] == window_lines(window())
    assert render_windows([]) == b""
