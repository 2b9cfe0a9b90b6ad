"""Comparing the event a span gave with the one ``wrap_openai`` recorded for the same request."""

from __future__ import annotations

from typing import Any

from promptprof._event import CallEvent

TIMINGS = ("promptprof.latency_ms", "gen_ai.server.time_to_first_token")

UNKNOWN_FROM_SPANS = {
    # The official instrumentation (2.4b0) puts no cached tokens on chat spans and reports
    # the time to the first chunk only as a metric, never on the span.
    "official": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.server.time_to_first_token"),
    "openllmetry": (),
}


def assert_same_call(
    reference: dict[str, Any], event: dict[str, Any], window: tuple[int, int],
    unknown: tuple[str, ...] = (),
) -> None:
    """``event`` has every field of ``reference`` but the ``unknown`` ones (not compared),
    equal, but for the event id (another) and the timings: the reference is another request,
    so the event's timing is checked against ``window`` (ns since the epoch, read around the
    request that made it): it starts and ends inside, its first token inside its latency."""
    CallEvent.model_validate(event)
    expected = {k: v for k, v in reference.items() if k not in unknown}
    got = {k for k in event if k not in unknown}
    assert got == set(expected), got ^ set(expected)
    for key, value in expected.items():
        if key == "event_id":
            assert event[key] != value
        elif key == "start_time_unix_nano":
            end = event[key] + event["promptprof.latency_ms"] * 1e6
            assert window[0] <= event[key] <= end <= window[1]
        elif key in TIMINGS:
            assert 0 < event[key] <= event["promptprof.latency_ms"], key
        else:
            assert event[key] == value, key
