"""Malformed input, interleaved with good events, against a real worker: every bad record or
event lands in the dead-letter topic with its reason, every good event is counted, and the
worker keeps running."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from processor_integration.conftest import MODEL, SERVICE, Pipeline, wait_until
from promptprof import Call
from promptprof._envelope import ENVELOPE_NAME, encode_envelope, encode_rows
from promptprof._event import series_key
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder
from promptprof_tools.stack import run_sync

pytestmark = pytest.mark.integration

MIXED = "mixed"
STEADY = "steady"
MAX_RECORD = 4 * 1_048_576
NOT_A_NUMBER = r"^promptprof\.latency_ms: Input should be a valid number"


class Events:
    """Good call-event dicts of the ``mixed`` series, timed now, as the producer builds them."""

    def __init__(self) -> None:
        self.builder = EventBuilder(SERVICE, "test", capture_text=False, redact=None)
        self.spec = make_spec(MIXED, "v1", model=MODEL)
        self.good = 0

    def make(self, count: int, *, counted: bool = True) -> list[dict[str, Any]]:
        events = []
        for _ in range(count):
            call = Call(None, self.spec, 1.0)  # starts now
            call.end_ns = call.start_ns + 120_000_000
            events.append(self.builder.build(call))
        self.good += count if counted else 0
        return events

    def envelope(self, count: int) -> bytes:
        return encode_envelope(self.make(count))


def _records(events: Events) -> tuple[list[bytes | None], dict[bytes, str]]:
    """The records to send in order, and the dead letters expected: the value each keeps (a
    record's bytes, an event's JSON) -> the pattern of its reason."""
    records: list[bytes | None] = []
    expected: dict[bytes, str] = {}

    def bad(value: bytes | None, reason: str) -> None:
        records.append(value)
        expected[(value or b"")[:65536]] = reason

    records.append(events.envelope(10))
    bad(b'{"envelope": "promptprof.batch", "envelope_version": 1, "events": [{"schema',
        r"^not JSON")
    records.append(events.envelope(10))
    # NaN as a raw JSON token: orjson refuses the whole record
    nan_token = events.envelope(1).replace(b'_ms":120.0', b'_ms":NaN')
    events.good -= 1
    assert b"NaN" in nan_token
    bad(nan_token, r"^not JSON")
    future = {"envelope": ENVELOPE_NAME, "envelope_version": 3, "events": events.make(3)}
    events.good -= 3
    bad(orjson.dumps(future), r"^unknown envelope 'promptprof\.batch' version 3")
    bad(orjson.dumps({"envelope": "someone.else", "envelope_version": 1, "events": []}),
        r"^unknown envelope 'someone\.else'")
    bad(orjson.dumps({"envelope": ENVELOPE_NAME, "envelope_version": "1", "events": []}),
        r"^unknown envelope 'promptprof\.batch' version '1'")
    bad(orjson.dumps({"envelope": ENVELOPE_NAME, "envelope_version": 1, "events": "many"}),
        r"^envelope 'events' must be a list")
    bad(b"[1, 2, 3]", r"^expected a JSON object, got list")
    bad(b'{"hello": "world"}', r"^neither a batch envelope nor an event")
    bad(None, r"^empty record")

    # one envelope, good events between bad ones: only the bad ones are dead letters
    good = events.make(5)
    template = events.make(1, counted=False)[0]
    bad_events: list[tuple[Any, str]] = [
        ({**template, "promptprof.latency_ms": -5.0},
         r"^promptprof\.latency_ms: Input should be greater than or equal to 0"),
        # strict contract: strings are not numbers, not even "NaN"
        ({**template, "promptprof.latency_ms": "NaN"}, NOT_A_NUMBER),
        ({**template, "promptprof.latency_ms": "Infinity"}, NOT_A_NUMBER),
        ({**template, "promptprof.latency_ms": "fast"}, NOT_A_NUMBER),
        ({**template, "gen_ai.usage.input_tokens": "many"}, r"^gen_ai\.usage\.input_tokens: "),
        ({**template, "promptprof.prompt.id": 42}, r"^promptprof\.prompt\.id: .*valid string"),
        ({**template, "schema_version": 2}, r"^schema_version: Input should be 1"),
        ({k: v for k, v in template.items() if k != "promptprof.prompt.id"},
         r"^promptprof\.prompt\.id: Field required"),
        ([1, 2], r"^event: Input should be a valid dictionary"),
    ]
    mixed = [good[0], good[1]]
    for event, reason in bad_events:
        mixed.append(event)
        expected[orjson.dumps(event)] = reason
    mixed.extend(good[2:])
    records.append(encode_envelope(mixed))

    # over the worker's 4 MiB limit, though valid: none of its events may count
    filler = "x" * 256
    big = [{**e, "promptprof.labels": {"pad": filler}} for e in events.make(40)]
    events.good -= 40
    oversized = encode_rows(big * (MAX_RECORD // len(encode_rows(big)) + 2))
    assert len(oversized) > MAX_RECORD
    bad(oversized, rf"^oversized record: {len(oversized)} bytes > {MAX_RECORD}")

    records.append(orjson.dumps(events.make(1)[0]))  # a bare event is accepted too
    records.append(events.envelope(10))
    return records, expected


async def _send(bootstrap: str, topic: str, key: bytes, records: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=16 * 1_048_576, linger_ms=0
    )
    await producer.start()
    try:
        for value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def test_bad_input_goes_to_the_dead_letter_topic(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(widths_s=[2])
    worker = pipeline.start_worker()
    traffic = pipeline.traffic()
    events = Events()
    records, dead = _records(events)
    key = series_key(events.make(1, counted=False)[0])

    # good traffic on another series before, during and after the bad records
    thread, _ = traffic.run_in_thread(4.0, 200, lambda i: (STEADY, 80.0, None))
    run_sync(_send(pipeline.broker.bootstrap, pipeline.topics.calls, key, records))
    thread.join()
    traffic.flush()

    letters = pipeline.read_topic(pipeline.topics.dead_letter, len(dead), timeout_s=60)
    got = [(h.get("reason", b"<no reason header>").decode(), v) for v, h in letters]
    shown = "\n".join(f"{r} <- {(v or b'')[:120]!r}" for r, v in got)
    assert len(letters) == len(dead), shown + "\n" + pipeline.logs()
    assert all(headers.get("stage") == b"worker" for _, headers in letters)
    # each dead letter keeps its bytes (a record's, the first 64 KiB of an oversized one, or
    # the bad event's JSON) and says why
    assert {v or b"" for _, v in got} == set(dead), shown
    for reason, value in got:
        assert re.search(dead[value or b""], reason), (reason, dead[value or b""])

    expected = {MIXED: float(events.good), STEADY: float(len(traffic.sent))}

    def counted() -> dict[str, float] | None:
        sums = pipeline.calls_by_prompt(2)
        return sums if all(sums.get(p, 0) >= n for p, n in expected.items()) else None

    wait_until(counted, 60, f"calls {expected}", lambda: str(pipeline.calls_by_prompt(2)))
    pipeline.wait_for_windows(traffic, 2)
    assert pipeline.calls_by_prompt(2) == expected
    assert worker.alive(), worker.log_tail()
    assert worker.stop() < 10


def _flood(events: Events, garbage: int, envelopes: int, per: int) -> tuple[
    list[tuple[bytes | None, bytes]], set[bytes]
]:
    """(key, value) records: unkeyed bad records (each a dead letter), and every
    ``garbage // envelopes`` of them an envelope of the ``mixed`` series with ``per`` bad events
    between good ones (each bad event a dead letter); the dead letters' values are distinct."""
    key = series_key(events.make(1, counted=False)[0])
    records: list[tuple[bytes | None, bytes]] = []
    dead: set[bytes] = set()
    for i in range(garbage):
        records.append((None, b"\x00garbage %d" % i))
        dead.add(records[-1][1])
        if i % (garbage // envelopes) == 0:
            junk = [{"junk": i, "j": j} for j in range(per)]
            dead.update(orjson.dumps(e) for e in junk)
            records.append((key, encode_envelope(events.make(3) + junk + events.make(2))))
    return records, dead


def test_a_flood_of_bad_input_reaches_the_dead_letter_topic_exactly(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    # lateness covers the time from building the flood's good events to their aggregation
    pipeline = pipeline_factory(widths_s=[2], allowed_lateness_s=5.0)
    workers = [pipeline.start_worker(f"worker-{i}") for i in range(2)]
    traffic = pipeline.traffic()
    events = Events()
    records, dead = _flood(events, garbage=6000, envelopes=60, per=50)
    assert len(dead) == 6000 + 60 * 50

    thread, _ = traffic.run_in_thread(8.0, 200, lambda i: (STEADY, 80.0, None))
    run_sync(_send_many(pipeline.broker.bootstrap, pipeline.topics.calls, records))
    thread.join()
    traffic.flush()

    letters = pipeline.read_topic(pipeline.topics.dead_letter, len(dead), timeout_s=90)
    values = [v or b"" for v, _ in letters]
    assert len(values) == len(dead), (len(values), len(dead), pipeline.logs())
    assert set(values) == dead
    expected = {MIXED: float(events.good), STEADY: float(len(traffic.sent))}

    def counted() -> bool:
        sums = pipeline.calls_by_prompt(2)
        return all(sums.get(p, 0) >= n for p, n in expected.items())

    wait_until(counted, 60, f"calls {expected}", lambda: str(pipeline.calls_by_prompt(2)))
    pipeline.wait_for_windows(traffic, 2)
    assert pipeline.calls_by_prompt(2) == expected
    assert all(w.alive() for w in workers), pipeline.logs()


async def _send_many(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    """Send (key, value) records as fast as the producer batches them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
