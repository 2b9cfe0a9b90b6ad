"""A partition's run without Faust or Kafka: decoding, validation, dead-letter reasons, the
wall-clock cap on the watermark, idle close, checkpoint and restore."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from promptprof._envelope import encode_envelope, encode_rows
from promptprof_processor.settings import WindowSettings
from promptprof_processor.windows.aggregator import StateError
from tests.processor.runs import MemoryLog, Runs, clock

NS = 1_000_000_000
T0 = 1_800_000_000 * NS  # a multiple of every width used here
_ids = iter(range(10**9))


def event(
    at_s: float, prompt_id: str = "p", latency_ms: Any = 100.0, **extra: Any
) -> dict[str, Any]:
    """A call-event dict as the producer sends it, ``at_s`` seconds after T0."""
    return {
        "schema_version": 1,
        "event_id": f"e{next(_ids)}",
        "start_time_unix_nano": T0 + round(at_s * NS),
        "service.name": "svc",
        "promptprof.prompt.id": prompt_id,
        "promptprof.prompt.version": "v1",
        "gen_ai.request.model": "m",
        "promptprof.latency_ms": latency_ms,
        **extra,
    }


def settings(widths: list[int] | None = None, lateness: float = 1.0) -> WindowSettings:
    return WindowSettings(widths_s=widths or [2], allowed_lateness_s=lateness)


def windows(
    widths: list[int] | None = None, lateness: float = 1.0, idle: float = 5.0, **kw: Any
) -> Runs:
    return Runs(settings(widths, lateness), idle_timeout_s=idle, **kw)


def at(seconds: float) -> int:
    return T0 + round(seconds * NS)


def test_an_envelope_is_aggregated_whole_and_closes_by_watermark() -> None:
    state = windows()
    outcome = state.handle(0, encode_envelope([event(0.1), event(0.5), event(1.9)]), at(2.0))
    assert (outcome.accepted, outcome.dead, outcome.closed) == (3, [], [])
    # the watermark is the latest event time minus the lateness: [0, 2) closes at 3 s
    outcome = state.handle(0, encode_envelope([event(2.9)]), at(3.0))
    assert outcome.closed == []
    outcome = state.handle(0, encode_envelope([event(3.0)]), at(3.1))
    assert [(w.window_start_ns, w.calls) for w in outcome.closed] == [(T0, 3.0)]


def test_a_bare_event_record_is_accepted() -> None:
    state = windows()
    assert state.handle(1, orjson.dumps(event(0.0)), at(0.1)).accepted == 1


def test_the_wall_clock_caps_the_watermark() -> None:
    """Events from a clock far ahead do not close windows that are still open by the wall."""
    state = windows()
    state.handle(0, encode_envelope([event(0.5)]), at(0.6))
    outcome = state.handle(0, encode_envelope([event(100.0)]), at(0.7))
    assert outcome.closed == []
    outcome = state.handle(0, encode_envelope([event(100.5)]), at(3.0))
    assert [w.window_start_ns for w in outcome.closed] == [T0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"envelope": "promptprof.batch", "events": [', "not JSON: "),
        (b'{"envelope": "promptprof.batch", "envelope_version": 1, "events": [{"x": NaN}]}',
         "not JSON: "),
        (b"[]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b'{"envelope": "promptprof.batch", "envelope_version": 3, "events": []}',
         "unknown envelope 'promptprof.batch' version 3"),
        (b'{"envelope": "other", "envelope_version": 1, "events": []}',
         "unknown envelope 'other' version 1"),
        (b'{"envelope": "promptprof.batch", "envelope_version": 1, "events": {}}',
         "envelope 'events' must be a list"),
        (b'{"service.name": "svc"}', "neither a batch envelope nor an event"),
        (None, "empty record"),
    ],
)
def test_records_that_cannot_be_decoded_are_dead_letters(
    value: bytes | None, reason: str
) -> None:
    state = windows()
    outcome = state.handle(0, value, at(1.0))
    assert outcome.accepted == 0
    assert len(outcome.dead) == 1
    assert outcome.dead[0].reason.startswith(reason)
    assert outcome.dead[0].value == (value or b"")


def test_an_oversized_record_is_a_dead_letter_with_its_head_only() -> None:
    state = windows(max_record_bytes=100_000)
    value = encode_rows([event(0.0, prompt_id="x" * 200) for _ in range(400)])
    assert len(value) > 100_000
    outcome = state.handle(0, value, at(1.0))
    assert outcome.accepted == 0
    assert [d.reason for d in outcome.dead] == [f"oversized record: {len(value)} bytes > 100000"]
    assert outcome.dead[0].value == value[:65536]


# The contract is strict: a string is not a number, not even "NaN" or "12.5"; nor is a boolean.
NOT_A_NUMBER = r"^promptprof\.latency_ms: Input should be a valid number"
BAD_EVENTS = [
    (event(0.2, latency_ms=-1.0), r"^promptprof\.latency_ms: Input should be greater than or"),
    (event(0.2, latency_ms="NaN"), NOT_A_NUMBER),
    (event(0.2, latency_ms="-Infinity"), NOT_A_NUMBER),
    (event(0.2, latency_ms="12.5"), NOT_A_NUMBER),
    (event(0.2, latency_ms=True), NOT_A_NUMBER),
    (event(0.2, latency_ms="slow"), NOT_A_NUMBER),
    (event(0.2, **{"gen_ai.usage.input_tokens": 3.0}), r"^gen_ai\.usage\.input_tokens: "),
    (event(0.2, schema_version=2), r"^schema_version: Input should be 1"),
    (event(0.2, **{"gen_ai.usage.input_tokens": -3}), r"^gen_ai\.usage\.input_tokens: "),
    (event(0.2, **{"promptprof.sample_rate": 0}), r"^promptprof\.sample_rate: Input should be"),
    (event(0.2, **{"promptprof.status": "maybe"}), r"^promptprof\.status: Input should be"),
    ({"schema_version": 1}, r"^event_id: Field required"),
    ("not an event", r"^event: Input should be a valid dictionary"),
]


def test_bad_events_are_dead_letters_and_good_ones_in_the_same_envelope_count() -> None:
    state = windows()
    good = [event(0.1), event(0.3), event(0.5)]
    mixed = [good[0], *(e for e, _ in BAD_EVENTS[:5]), good[1], *(e for e, _ in BAD_EVENTS[5:]),
             good[2]]
    outcome = state.handle(0, encode_envelope(mixed), at(0.6))
    assert outcome.accepted == len(good)
    assert len(outcome.dead) == len(BAD_EVENTS)
    for letter, (raw, reason) in zip(outcome.dead, BAD_EVENTS, strict=True):
        assert re.search(reason, letter.reason), (letter.reason, reason)
        assert orjson.loads(letter.value) == raw
    closed = state.handle(0, encode_envelope([event(5.0)]), at(5.0)).closed
    assert [(w.calls, w.latency_ms and w.latency_ms.max) for w in closed] == [(3.0, 100.0)]


def test_idle_partitions_close_by_the_wall_clock_alone() -> None:
    state = windows(idle=0.0)
    state.handle(0, encode_envelope([event(0.5)]), at(0.6))
    state.handle(1, encode_envelope([event(2.5, prompt_id="q")]), at(2.6))
    assert state.close_idle(at(2.9)) == {}  # [0, 2) still within its lateness
    closed = state.close_idle(at(3.0))
    assert {p: [w.window_start_ns for w in ws] for p, ws in closed.items()} == {0: [T0]}
    closed = state.close_idle(at(5.0))
    assert {p: [w.series.prompt_id for w in ws] for p, ws in closed.items()} == {1: ["q"]}
    assert state.close_idle(at(60.0)) == {}


def test_a_partition_behind_its_log_is_not_idle() -> None:
    state = windows(idle=0.0)
    state.handle(0, encode_envelope([event(0.5)]), at(0.6))
    state.run(0).behind = True
    assert state.close_idle(at(60.0)) == {}
    state.run(0).behind = False
    assert list(state.close_idle(at(60.0))) == [0]


def test_a_busy_partition_is_not_closed_by_the_idle_timer() -> None:
    state = windows(idle=3600.0)
    state.handle(0, encode_envelope([event(0.5)]), at(0.6))
    assert state.close_idle(at(60.0)) == {}


def test_checkpoint_and_restore_continue_where_the_state_left_off() -> None:
    first = windows()
    first.handle(2, encode_envelope([event(0.1), event(0.2, latency_ms=300.0)]), at(0.3))
    saved = MemoryLog()
    saved.checkpoint(first.run(2))

    restored = saved.restore(2, settings())
    assert restored.next_offset == 1
    outputs = restored.take(1, encode_envelope([event(0.4), event(3.5)]), clock(at(3.5)))
    closed = [o.window for o in outputs if o.window is not None]
    assert [(w.calls, w.latency_ms and w.latency_ms.max) for w in closed] == [
        (3.0, pytest.approx(300.0, rel=0.01))
    ]
    assert restored.windows.stats.events == 4


def test_a_checkpoint_of_other_widths_is_not_restored() -> None:
    first = windows(widths=[2])
    first.handle(0, encode_envelope([event(0.1)]), at(0.2))
    saved = MemoryLog()
    saved.checkpoint(first.run(0))
    with pytest.raises(StateError, match="widths"):
        saved.restore(0, settings(widths=[5]))


@pytest.mark.parametrize("encode", [encode_envelope, encode_rows])
def test_events_too_far_ahead_of_the_clock_are_dead_letters_and_the_rest_count(
    encode: Any,
) -> None:
    state = Runs(WindowSettings(widths_s=[2], max_future_s=60))
    value = encode([event(0.5), event(60.5), event(61.5), event(1.0)])
    outcome = state.handle(0, value, at(0.5))
    assert outcome.accepted == 3
    assert [d.reason for d in outcome.dead] == [
        "start_time_unix_nano: 61 s ahead of the worker's clock (windows.max_future_s is 60)"
    ]
    dead = orjson.loads(outcome.dead[0].value)
    assert dead["start_time_unix_nano"] == at(61.5) and dead["latency_ms"] == 100.0
    assert state.run(0).windows.stats.events == 3


def test_a_record_of_only_far_future_events_is_all_dead_letters() -> None:
    state = Runs(WindowSettings(widths_s=[2], max_future_s=60))
    outcome = state.handle(0, encode_envelope([event(100.0), event(101.0)]), at(0.5))
    assert outcome.accepted == 0 and len(outcome.dead) == 2


def test_a_failure_inside_the_worker_keeps_the_record_as_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = windows()
    value = encode_envelope([event(0.5)])

    def broken(*_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("promptprof_processor.ingest.records.validate_columns", broken)
    outcome = state.handle(0, value, at(1.0))
    assert outcome.accepted == 0
    assert [(d.value, d.reason) for d in outcome.dead] == [
        (value, "internal error: RuntimeError('bug')")
    ]
    assert state.handle(0, encode_rows([event(0.6)]), at(1.0)).accepted == 1
