"""Packing events into per-partition envelopes: routes, order, limits and exact round trips."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof import Call
from promptprof._envelope import ColumnBatch, decode_batch
from promptprof._event import CallEvent, series_key
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder
from promptprof.export import Cycle
from promptprof.export._packing import Envelope, Packer, partition_of

DEFAULTS = {
    (info.alias or name): info.get_default(call_default_factory=True)
    for name, info in CallEvent.model_fields.items()
    if not info.is_required()
}
BUILDER = EventBuilder("svc", "test", False, None)
SPECS = [
    make_spec(f"prompt-{i % 7}", f"v{i % 3}", f"model-{i % 5}", "openai", "chat",
              {"team": f"t{i % 2}"} if i % 4 else None)
    for i in range(40)
]


def _keyed(spec_index: int, step: int, error: bool, tokens: bool) -> tuple[bytes, dict[str, Any]]:
    """A built call event of one of the specs, its figures varying with ``step``."""
    call = Call(None, SPECS[spec_index], 1.0)
    call.start_ns, call.end_ns = 1_000 * step, 1_000 * step + 7_000_000 + step
    if error:
        call.set_error("Timeout")
    if tokens:
        call.set_usage(100 + step, 20 + step % 9)
    return BUILDER.build_keyed(call)


def _quality(spec_index: int) -> tuple[bytes, dict[str, Any]]:
    call = Call(None, SPECS[spec_index], 1.0)
    call.end_ns = call.start_ns + 1
    return BUILDER.build_keyed(("quality", call, 0.5, "judge"))


def _rows(envelope: Envelope) -> list[dict[str, Any]]:
    batch = decode_batch(envelope.value)
    return batch.rows() if isinstance(batch, ColumnBatch) else batch


def _same_event(row: dict[str, Any], event: dict[str, Any]) -> bool:
    """The decoded row carries exactly the event: its values (and their types), and the
    contract's default for every key the event left out."""
    for key, value in row.items():
        expected = event.get(key, DEFAULTS.get(key))
        if value != expected or type(value) is not type(expected):
            return False
    return event.keys() <= row.keys()


def _pack(
    keyed: list[tuple[bytes, dict[str, Any]]], partitions: int | None, batch_max: int = 500,
    max_bytes: int = 900_000,
) -> tuple[list[Envelope], list[str]]:
    drops: list[str] = []
    cycle = Cycle([key for key, _ in keyed], [event for _, event in keyed])
    return Packer(batch_max, drops.append, max_bytes).pack(cycle, partitions), drops


mixes = st.lists(
    st.tuples(
        st.integers(0, len(SPECS) - 1), st.booleans(), st.booleans(),
        st.integers(0, 20).map(lambda n: n == 0),
    ),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(
    mix=mixes, partitions=st.integers(1, 9), batch_max=st.integers(1, 60),
    max_bytes=st.sampled_from([3_000, 20_000, 900_000]),
)
def test_every_event_lands_once_on_its_keys_partition_in_order(
    mix: list[tuple[int, bool, bool, bool]], partitions: int, batch_max: int, max_bytes: int
) -> None:
    keyed = [
        _quality(spec) if quality else _keyed(spec, step, error, tokens)
        for step, (spec, error, tokens, quality) in enumerate(mix)
    ]
    envelopes, drops = _pack(keyed, partitions, batch_max, max_bytes)
    assert drops == []
    received: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for envelope in envelopes:
        assert envelope.partition is not None and envelope.key is None
        assert 1 <= envelope.events <= batch_max
        assert len(envelope.value) <= max_bytes
        rows = _rows(envelope)
        assert len(rows) == envelope.events
        received[envelope.partition].extend(rows)
    expected: dict[int, list[tuple[bytes, dict[str, Any]]]] = defaultdict(list)
    for key, event in keyed:
        expected[partition_of(key, partitions)].append((key, event))
    assert received.keys() == expected.keys()
    for partition, pairs in expected.items():
        rows = received[partition]
        assert len(rows) == len(pairs)
        by_series: dict[bytes, list[str]] = defaultdict(list)
        for key, event in pairs:
            match = [row for row in rows if row["event_id"] == event["event_id"]]
            assert len(match) == 1 and _same_event(match[0], event)
            if event.get("kind") != "quality":
                by_series[key].append(event["event_id"])
        calls = [row for row in rows if row.get("kind") != "quality"]
        for key, ids in by_series.items():  # a series' calls keep their order on the partition
            assert [row["event_id"] for row in calls if series_key(row) == key] == ids


@given(st.binary(min_size=0, max_size=64), st.integers(1, 64))
def test_partition_is_the_keyed_default_partitioners(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_of(key, partitions) == DefaultPartitioner()(key, every, every)


def test_many_series_share_one_envelope_per_partition() -> None:
    keyed = [_keyed(i % len(SPECS), i, False, True) for i in range(400)]
    envelopes, _ = _pack(keyed, 4)
    assert len(envelopes) == 4
    assert sum(e.events for e in envelopes) == 400
    assert all(decode_batch(e.value).__class__ is ColumnBatch for e in envelopes)


def test_quality_events_follow_the_calls_of_their_partition_in_rows() -> None:
    keyed = [_keyed(0, 1, False, False), _quality(0), _keyed(0, 2, False, False)]
    envelopes, _ = _pack(keyed, 1)
    assert [e.events for e in envelopes] == [2, 1]
    assert isinstance(decode_batch(envelopes[0].value), ColumnBatch)
    assert [row["kind"] for row in _rows(envelopes[1])] == ["quality"]


def test_without_a_partition_count_envelopes_are_keyed_by_series() -> None:
    keyed = [_keyed(i % 3, i, False, False) for i in range(9)]
    envelopes, _ = _pack(keyed, None)
    assert sorted(e.key for e in envelopes if e.key) == sorted({k for k, _ in keyed})
    assert all(e.partition is None and e.events == 3 for e in envelopes)


def test_events_that_cannot_be_encoded_are_dropped_and_counted() -> None:
    good = _keyed(0, 1, False, False)
    bad = _keyed(0, 2, False, False)
    bad[1]["promptprof.labels"] = {"x": object()}
    huge = _keyed(0, 3, False, False)
    huge[1]["error.type"] = "x" * 5_000
    envelopes, drops = _pack([good, bad, huge], 1, max_bytes=2_000)
    assert [row["event_id"] for e in envelopes for row in _rows(e)] == [good[1]["event_id"]]
    assert len(drops) == 2


@given(st.one_of(st.none(), st.integers(0, 2**31 - 1)), st.binary(max_size=40))
def test_the_spool_key_keeps_the_route(partition: int | None, series: bytes) -> None:
    key = None if partition is not None else series.replace(b"\xff", b"")
    envelope = Envelope(b"{}", 3, partition=partition, key=key)
    restored = Envelope.from_spool(envelope.spool_key(), envelope.value, envelope.events)
    assert restored.partition == envelope.partition
    assert (restored.key or b"") == (envelope.key or b"")
