"""The sink on refused writes, against a fake InfluxDB: bisection finds exactly the refused
points, the rest is written, and each bad record is dead-lettered once, with the reason."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.consumer import WindowSink
from promptprof_processor.sink.influx import InfluxWriteError, RetryingWriter
from promptprof_processor.sink.lineprotocol import window_lines

from .fakes import DeadLetters, FakeInflux, window


def retrying(influx: FakeInflux) -> RetryingWriter:
    return RetryingWriter(influx, initial_s=0.001, maximum_s=0.002)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 300),
    poison=st.sets(st.integers(0, 299), max_size=12),
    status=st.sampled_from([400, 413, 422]),
)
async def test_bisection_finds_exactly_the_refused_lines_and_writes_the_rest(
    size: int, poison: set[int], status: int
) -> None:
    poison = {i for i in poison if i < size}
    lines = [f"m,t=poison{i} v=1 {i}" if i in poison else f"m,t=ok{i} v=1 {i}" for i in range(size)]
    influx = FakeInflux(refuse_status=status)

    refused = await retrying(influx).write_finding_refused(lines)

    assert refused.keys() == poison
    assert all(f"'{lines[i]}'" in reason for i, reason in refused.items())
    assert set(influx.stored) == {line for i, line in enumerate(lines) if i not in poison}
    depth = math.ceil(math.log2(size)) if size > 1 else 0
    assert influx.requests <= 1 + 2 * len(poison) * depth


async def test_a_clean_batch_is_one_request() -> None:
    influx = FakeInflux()
    assert await retrying(influx).write_finding_refused(["m v=1 1", "m v=2 2"]) == {}
    assert influx.requests == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_request_refused_whatever_it_holds_is_raised_not_bisected(status: int) -> None:
    influx = FakeInflux(deny_status=status)
    writer = retrying(influx)
    with pytest.raises(InfluxWriteError) as raised:
        await writer.write_finding_refused([f"m v={i} {i}" for i in range(64)])
    assert raised.value.status == status and influx.requests == 1
    assert await writer.write(["m v=1 1"]) is False  # the alerts' all-or-nothing write


async def test_outages_are_retried_with_backoff_until_written() -> None:
    influx = FakeInflux(outages=3)
    writer = retrying(influx)
    assert await writer.write_finding_refused(["m v=1 1"]) == {}
    assert influx.requests == 4 and writer.failures == 3 and influx.stored["m v=1 1"] == 1
    assert writer.behind_since is None


async def test_the_all_or_nothing_write_reports_a_refusal() -> None:
    writer = retrying(FakeInflux())
    assert await writer.write(["m,t=poison v=1 1", "m v=1 2"]) is False
    assert writer.rejected == 2
    assert await writer.write(["m v=1 3"]) is True


def sink(influx: FakeInflux) -> WindowSink:
    return WindowSink(ProcessorSettings(), group_id="unit", writer=retrying(influx))


async def test_only_the_bad_records_of_a_poll_are_dead_lettered_once_each() -> None:
    good_a, good_b = window("a"), window("b", error_types=("Timeout",), start_s=10)
    poisoned = window("poison")
    poisoned_twice = window("c", error_types=("poison1", "poison2"))  # two refused lines
    unwritable = window("ends\\")  # bypasses the contract: the sink must not write it
    values = [good_a.to_bytes(), b"not json", poisoned.to_bytes(), good_b.to_bytes(),
              poisoned_twice.to_bytes(), unwritable.to_bytes()]
    influx, dead = FakeInflux(), DeadLetters()
    windows = sink(influx)

    await windows.write(values, dead)

    sent = {value: headers for _, value, headers in dead.sent}
    assert len(dead.sent) == len(sent) == 4  # each bad record once
    assert sent.keys() == {b"not json", poisoned.to_bytes(), poisoned_twice.to_bytes(),
                           unwritable.to_bytes()}
    assert sent[b"not json"]["reason"].startswith("not a window:")
    assert sent[poisoned.to_bytes()]["reason"].startswith(
        "influxdb refused a point: partial write: unable to parse 'llm_window,"
    )
    assert "poison1" in sent[poisoned_twice.to_bytes()]["reason"]
    assert "cannot be written to InfluxDB exactly" in sent[unwritable.to_bytes()]["reason"]
    assert all(h["stage"] == "sink" for h in sent.values())
    assert {topic for topic, _, _ in dead.sent} == {ProcessorSettings().topics.dead_letter}
    assert windows.dead_letters == {"not_a_window": 1, "influxdb_refused": 2, "unwritable": 1}
    assert windows.windows_written == 2
    good_lines = [*window_lines(good_a), *window_lines(good_b)]
    assert all(influx.stored[line] >= 1 for line in good_lines)
    assert window_lines(poisoned_twice)[0] in influx.stored  # its good point was written


async def test_a_poll_without_bad_records_writes_everything_in_one_request() -> None:
    influx, dead = FakeInflux(), DeadLetters()
    windows = sink(influx)
    await windows.write([window(str(i)).to_bytes() for i in range(50)], dead)
    assert dead.sent == [] and influx.requests == 1 and windows.windows_written == 50


async def test_a_sink_refused_whatever_it_writes_stops_without_dead_letters() -> None:
    dead = DeadLetters()
    with pytest.raises(InfluxWriteError, match="denied"):  # the poll is delivered again
        await sink(FakeInflux(deny_status=401)).write([window("a").to_bytes(), b"junk"], dead)
    assert dead.sent == []
