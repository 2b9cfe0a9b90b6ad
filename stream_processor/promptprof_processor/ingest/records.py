"""One Kafka record of the calls topic read into valid call events and rejected parts.

A record holds a batch envelope (columnar or rows) or one bare event. Whatever cannot be taken
becomes a :class:`Rejected` with its reason, for the dead-letter topic: a record that is empty,
oversized or not an envelope whole; otherwise each invalid event on its own, and each event that
starts further ahead of the worker's clock than ``windows.max_future_s`` (it would hold its
windows open, and their state, until the clock caught up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from promptprof._envelope import ColumnBatch, EnvelopeError, decode_batch
from promptprof_processor.ingest.validation import (
    CallColumns,
    Record,
    validate_columns,
    validate_events,
)
from promptprof_processor.settings import WindowSettings
from promptprof_processor.units import NS_PER_S

MAX_RECORD_BYTES = 4 * 1_048_576
# What a dead letter keeps of a record too large to keep whole.
PREFIX_BYTES = 65_536

Events = CallColumns | list[Record]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A part of a record that was not taken: the bytes to keep and why."""

    value: bytes
    reason: str


@dataclass(slots=True)
class Read:
    """What one record held: valid events (by column or as rows) and rejected parts."""

    events: Events = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class RecordReader:
    """Decodes and validates calls-topic records."""

    def __init__(self, settings: WindowSettings, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        """A reader refusing records over ``max_record_bytes`` and events too far ahead."""
        self.settings = settings
        self.max_record_bytes = max_record_bytes

    def read(self, value: bytes | None, now_ns: int) -> Read:
        """The events and rejected parts of one record value."""
        read = Read()
        raw = self._decode(value, read)
        if raw:
            good, bad = (validate_columns(raw) if isinstance(raw, ColumnBatch)
                         else validate_events(raw))
            read.rejected.extend(Rejected(_dump(r), reason) for r, reason in bad)
            read.events = self._drop_far_future(good, now_ns, read)
        return read

    def _decode(self, value: bytes | None, read: Read) -> list[Any] | ColumnBatch:
        if value is None:
            read.rejected.append(Rejected(b"", "empty record"))
            return []
        if len(value) > self.max_record_bytes:
            reason = f"oversized record: {len(value)} bytes > {self.max_record_bytes}"
            read.rejected.append(Rejected(value[:PREFIX_BYTES], reason))
            return []
        try:
            return decode_batch(value)
        except EnvelopeError as exc:
            read.rejected.append(Rejected(value, str(exc)))
            return []

    def _drop_far_future(self, good: Events, now_ns: int, read: Read) -> Events:
        limit = now_ns + self.settings.max_future_ns
        if isinstance(good, CallColumns):
            times = good.column("start_time_unix_nano")
            if max(times, default=0) <= limit:
                return good
            self._reject_future(good.rows([i for i, t in enumerate(times) if t > limit]),
                                now_ns, read)
            return good.select([i for i, t in enumerate(times) if t <= limit])
        if max((r["start_time_unix_nano"] for r in good), default=0) <= limit:
            return good
        self._reject_future([r for r in good if r["start_time_unix_nano"] > limit], now_ns, read)
        return [r for r in good if r["start_time_unix_nano"] <= limit]

    def _reject_future(self, rows: Sequence[Any], now_ns: int, read: Read) -> None:
        for row in rows:
            ahead_s = (row["start_time_unix_nano"] - now_ns) / NS_PER_S
            reason = (
                f"start_time_unix_nano: {ahead_s:.0f} s ahead of the worker's clock "
                f"(windows.max_future_s is {self.settings.max_future_s:g})"
            )
            read.rejected.append(Rejected(_dump(row), reason))


def _dump(raw: Any) -> bytes:
    try:
        return orjson.dumps(raw)
    except TypeError:
        return repr(raw).encode()
