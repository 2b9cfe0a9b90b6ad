"""Packing call events into Kafka records: one columnar envelope per partition of the calls topic.

A Kafka record costs the stream worker a fixed amount however many events it carries, so the
producer packs every event bound for one partition into one envelope (the series are columns of
the version 2 format), at most ``batch_max`` events and :data:`MAX_RECORD_BYTES` per record, and
sends it to that partition explicitly. The partition of a series is the one the keyed default
partitioner gives its key (murmur2 of the series key modulo the partition count, as in the Java
client and aiokafka), so a series stays on one partition, in the order its events were taken.

While the partition count is unknown (Kafka not reached yet), events are packed per series and
sent keyed, which lands them on the same partition.

Within a partition the events are grouped by series (each series' events in the order taken), so
a busy series fills records of its own and the long tail shares records; call events come first
and quality events (rows only) after them in records of their own: a quality event refers to a
call recorded before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2

from promptprof._envelope import encode_envelope
from promptprof.export._base import Cycle

MAX_RECORD_BYTES = 900_000
ROUTE_CACHE_SIZE = 65_536
_PARTITION_MARK = b"\xff"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One encoded Kafka record: sent to ``partition``, or keyed by ``key`` when it is None."""

    value: bytes
    events: int
    partition: int | None = None
    key: bytes | None = None

    def spool_key(self) -> bytes:
        """The key the disk spool stores: the series key, or the partition behind a 0xFF byte
        (which no UTF-8 series key starts with)."""
        if self.partition is None:
            return self.key or b""
        return _PARTITION_MARK + self.partition.to_bytes(4, "big")

    @classmethod
    def from_spool(cls, key: bytes, value: bytes, events: int) -> Envelope:
        """The envelope a spooled record (see :meth:`spool_key`) was made from."""
        if key[:1] == _PARTITION_MARK and len(key) == 5:
            return cls(value, events, partition=int.from_bytes(key[1:], "big"))
        return cls(value, events, key=key)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the keyed default partitioner picks for ``key`` among ``partitions``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class Packer:
    """Turns (series key, event) pairs into envelopes; counts events it cannot encode.

    ``on_drop(reason)`` is called once per dropped event.
    """

    def __init__(
        self, batch_max: int, on_drop: Callable[[str], None],
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.batch_max = batch_max
        self.max_record_bytes = max_record_bytes
        self._on_drop = on_drop
        self._routes: dict[bytes, int] = {}
        self._routes_for = 0  # the partition count the cached routes were computed for

    def pack(self, cycle: Cycle, partitions: int | None) -> list[Envelope]:
        """Envelopes of the cycle's events, per partition (or per series key when
        ``partitions`` is None); a series' events keep their order in the cycle."""
        by_series: dict[bytes, list[dict[str, Any]]] = {}
        for key, event in zip(cycle.keys, cycle.events, strict=True):
            events = by_series.get(key)
            if events is None:
                by_series[key] = [event]
            else:
                events.append(event)
        route = self._router(partitions)
        calls: dict[int | bytes, list[dict[str, Any]]] = {}
        qualities: dict[int | bytes, list[dict[str, Any]]] = {}
        for key, events in by_series.items():
            target = route(key)
            scored = [e for e in events if "kind" in e]  # quality events: rows only
            if scored:
                events = [e for e in events if "kind" not in e]
                qualities.setdefault(target, []).extend(scored)
            calls.setdefault(target, []).extend(events)
        envelopes: list[Envelope] = []
        for target in calls.keys() | qualities.keys():
            for events in (calls.get(target, []), qualities.get(target, [])):
                for start in range(0, len(events), self.batch_max):
                    envelopes.extend(self._encode(target, events[start : start + self.batch_max]))
        return envelopes

    def _router(self, partitions: int | None) -> Callable[[bytes], int | bytes]:
        if partitions is None:
            return _same
        if partitions != self._routes_for or len(self._routes) >= ROUTE_CACHE_SIZE:
            self._routes, self._routes_for = {}, partitions
        routes = self._routes

        def route(key: bytes) -> int:
            target = routes.get(key)
            if target is None:
                target = routes[key] = partition_of(key, partitions)
            return target

        return route

    def _encode(self, target: int | bytes, events: list[dict[str, Any]]) -> list[Envelope]:
        """One envelope, or several when it exceeds the record size (halved until it fits)."""
        try:
            value = encode_envelope(events)
        except TypeError as exc:
            return self._encode_each(target, events, exc)
        if len(value) <= self.max_record_bytes:
            if isinstance(target, int):
                return [Envelope(value, len(events), partition=target)]
            return [Envelope(value, len(events), key=target)]
        if len(events) == 1:
            self._on_drop(f"event of {len(value)} bytes exceeds the record limit")
            return []
        half = len(events) // 2
        return self._encode(target, events[:half]) + self._encode(target, events[half:])

    def _encode_each(
        self, target: int | bytes, events: list[dict[str, Any]], exc: Exception
    ) -> list[Envelope]:
        """Find the events that cannot be serialised, drop and count them, keep the rest."""
        good = []
        for event in events:
            try:
                encode_envelope([event])
                good.append(event)
            except TypeError:
                self._on_drop(f"cannot serialise event: {exc}")
        return self._encode(target, good) if good else []


def _same(key: bytes) -> bytes:
    return key
