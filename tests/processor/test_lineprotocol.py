"""Line protocol rendering and escaping."""

from __future__ import annotations

import pytest

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


def split_line(line: str) -> tuple[str, dict[str, str], int]:
    """The escaped series part, the fields and the timestamp of a line whose fields are all
    numbers (window lines). Reading back exactly is checked against the real InfluxDB in
    tests/sink/test_hostile_values.py, not here."""
    series, field_part, timestamp = line.rsplit(" ", 2)
    fields = dict(pair.split("=", 1) for pair in field_part.split(","))
    return series, fields, int(timestamp)


def test_escaping_examples() -> None:
    assert escape_measurement("a b,c=d") == r"a\ b\,c=d"
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key("C:\\dir") == "C:\\dir"  # a backslash before a letter stays
    assert escape_key("cr\r") == "cr\r"
    assert escape_key("tab\there \"q\" é😀") == 'tab\there\\ "q"\\ é😀'
    assert escape_string('say "hi" \\o/') == r'"say \"hi\" \\o/"'
    assert escape_string("two\nlines\\") == '"two\nlines\\\\"'


@pytest.mark.parametrize(
    "value", ["ends\\", "x\\,y", "x\\ y", "x\\=y", "x\\\\y", "two\nlines", "\ud800"]
)
def test_values_that_cannot_be_written_exactly_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"cannot carry|lone surrogate"):
        escape_key(value)
    with pytest.raises(ValueError):
        encode_line("m", {"t": value}, {"v": 1}, 1)


def test_string_fields_refuse_only_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        escape_string("a\udc80")
    assert escape_string("ends\\\n") == '"ends\\\\\n"'


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
    series, fields, timestamp = split_line(lines[0])
    assert series == (
        r"llm_window,model=gpt-4o-mini,prompt_id=summarise\ email,prompt_version=v1,service=svc,"
        r"tenant=acme\,inc,width=10s"
    )
    assert timestamp == T0
    assert fields["events"] == "3i" and fields["late_events"] == "4i"
    assert fields["calls"] == "3.0" and fields["errors"] == "2.0"
    assert fields["latency_max_ms"] == "300.0"
    assert float(fields["latency_p50_ms"]) == pytest.approx(200, rel=0.01)
    assert fields["ttft_calls"] == "1.0" and "ttft_p99_ms" in fields
    assert fields["input_tokens_sum"] == "10.0" and "output_tokens_sum" not in fields
    assert fields["cost_per_call_usd"] == "0.5" and fields["cost_unknown_calls"] == "2.0"
    assert fields["quality_mean"] == "0.5"
    errors = [split_line(line) for line in lines[1:]]
    tags = series.removeprefix(f"{WINDOW_MEASUREMENT},")
    assert errors == [  # tags sorted: error_type first
        (rf"{ERRORS_MEASUREMENT},error_type=Rate\ Limit,{tags}", {"errors": "1.0"}, T0),
        (f"{ERRORS_MEASUREMENT},error_type=Timeout,{tags}", {"errors": "1.0"}, T0),
    ]


def test_render_windows_joins_lines() -> None:
    body = render_windows([window(), window()])
    assert body.count(b"\n") == 5
    assert body.decode().split("\n")[:3] == window_lines(window())
    assert render_windows([]) == b""
