"""Per-partition window state: decode, validate, aggregate, close by watermark.

This is the stream processor's logic without Faust, so it is tested directly. The Faust agent
(:mod:`promptprof_processor.runtime.worker`) feeds it records, publishes what it returns, and
checkpoints
its state in a table.

Watermarks are per partition (a series lives on one partition). A partition's watermark is the
latest event time seen minus the allowed lateness, capped by the wall clock minus the lateness, so
a producer whose clock runs ahead cannot close windows early. A partition that received nothing
for ``idle_timeout_s`` advances by the wall clock alone, so its last windows close too.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from promptprof.envelope import ColumnBatch, EnvelopeError, decode_batch
from promptprof_processor.ingest.validation import (
    CallColumns,
    Record,
    validate_columns,
    validate_events,
)
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.windows.aggregator import StateError, WindowAggregator
from promptprof_processor.windows.figures import WindowAggregate

log = structlog.get_logger("promptprof.worker")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record or event: the bytes to keep and why."""

    value: bytes
    reason: str


@dataclass
class Outcome:
    """What handling one record produced."""

    closed: list[WindowAggregate] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0


@dataclass
class _Partition:
    aggregator: WindowAggregator
    last_record_s: float = field(default_factory=time.monotonic)


class PartitionWindows:
    """The window state of every partition this worker owns."""

    def __init__(
        self, settings: WindowSettings, *, idle_timeout_s: float = 5.0,
        max_record_bytes: int = 4 * 1_048_576,
    ) -> None:
        self.settings = settings
        self.idle_timeout_s = idle_timeout_s
        self.max_record_bytes = max_record_bytes
        self._partitions: dict[int, _Partition] = {}

    def owns(self, partition: int) -> bool:
        """Whether state for ``partition`` is loaded."""
        return partition in self._partitions

    def restore(self, partition: int, state: bytes | None) -> None:
        """Load a partition's checkpointed state (or start empty)."""
        self._partitions[partition] = _Partition(self._aggregator_from(state))

    def _aggregator_from(self, state: bytes | None) -> WindowAggregator:
        if state:
            try:
                return WindowAggregator.from_bytes(state, self.settings)
            except (StateError, ValueError, KeyError) as exc:
                log.warning("promptprof.checkpoint_discarded", reason=str(exc))
        return WindowAggregator(self.settings)

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's in-memory state (its checkpoint stays in the table)."""
        self._partitions.pop(partition, None)

    def checkpoint(self, partition: int) -> bytes:
        """A partition's state as bytes for the table."""
        return self._partitions[partition].aggregator.to_bytes()

    def handle(self, partition: int, value: bytes | None, now_ns: int | None = None) -> Outcome:
        """Decode, validate and aggregate one record; return closed windows and dead letters."""
        outcome = Outcome()
        if partition not in self._partitions:
            self.restore(partition, None)
        state = self._partitions[partition]
        state.last_record_s = time.monotonic()
        try:
            self._aggregate(state, value, now_ns, outcome)
        except Exception as exc:  # a bug must not stop the worker: keep the record to replay
            log.exception("promptprof.record_failed", partition=partition)
            outcome.dead.append(DeadLetter(value or b"", f"internal error: {exc!r}"))
        outcome.closed = self._advance(state, now_ns)
        return outcome

    def _aggregate(
        self, state: _Partition, value: bytes | None, now_ns: int | None, outcome: Outcome
    ) -> None:
        raw_events = self._decode(value, outcome)
        if raw_events:
            good, bad = (
                validate_columns(raw_events)
                if isinstance(raw_events, ColumnBatch)
                else validate_events(raw_events)
            )
            outcome.dead.extend(DeadLetter(_dump(raw), reason) for raw, reason in bad)
            good = self._drop_far_future(good, now_ns or time.time_ns(), outcome)
            if isinstance(good, CallColumns):
                state.aggregator.add_columns(good)
                outcome.accepted = good.count
            else:
                state.aggregator.add(good)
                outcome.accepted = len(good)

    def _drop_far_future(
        self, good: CallColumns | list[Record], now_ns: int, outcome: Outcome
    ) -> CallColumns | list[Record]:
        """Dead-letter the events that start further ahead of ``now_ns`` than allowed: they
        would hold their windows open, and their state, until the clock caught up."""
        limit = now_ns + self.settings.max_future_ns
        if isinstance(good, CallColumns):
            times = good.column("start_time_unix_nano")
            if max(times, default=0) <= limit:
                return good
            far = [i for i, t in enumerate(times) if t > limit]
            keep = [i for i, t in enumerate(times) if t <= limit]
            self._dead_future(good.rows(far), now_ns, outcome)
            return good.select(keep)
        if max((r["start_time_unix_nano"] for r in good), default=0) <= limit:
            return good
        self._dead_future([r for r in good if r["start_time_unix_nano"] > limit], now_ns, outcome)
        return [r for r in good if r["start_time_unix_nano"] <= limit]

    def _dead_future(self, rows: Sequence[Any], now_ns: int, outcome: Outcome) -> None:
        for row in rows:
            ahead_s = (row["start_time_unix_nano"] - now_ns) / NS_PER_S
            reason = (
                f"start_time_unix_nano: {ahead_s:.0f} s ahead of the worker's clock "
                f"(windows.max_future_s is {self.settings.max_future_s:g})"
            )
            outcome.dead.append(DeadLetter(_dump(row), reason))

    def _decode(self, value: bytes | None, outcome: Outcome) -> list[Any] | ColumnBatch:
        if value is None:
            outcome.dead.append(DeadLetter(b"", "empty record"))
            return []
        if len(value) > self.max_record_bytes:
            reason = f"oversized record: {len(value)} bytes > {self.max_record_bytes}"
            outcome.dead.append(DeadLetter(value[:65536], reason))
            return []
        try:
            return decode_batch(value)
        except EnvelopeError as exc:
            outcome.dead.append(DeadLetter(value, str(exc)))
            return []

    def _advance(self, state: _Partition, now_ns: int | None) -> list[WindowAggregate]:
        wall = (now_ns or time.time_ns()) - self.settings.allowed_lateness_ns
        return state.aggregator.advance(min(state.aggregator.watermark_ns, wall))

    def close_idle(
        self, now_ns: int | None = None, behind: Collection[int] = ()
    ) -> dict[int, list[WindowAggregate]]:
        """Advance partitions that received nothing lately by the wall clock alone; not those
        ``behind`` (their log holds records they did not get yet: they are not idle)."""
        now = time.monotonic()
        wall = (now_ns or time.time_ns()) - self.settings.allowed_lateness_ns
        closed = {}
        for partition, state in self._partitions.items():
            if now - state.last_record_s >= self.idle_timeout_s and partition not in behind:
                windows = state.aggregator.advance(wall)
                if windows:
                    closed[partition] = windows
        return closed

    def stats(self) -> dict[str, int]:
        """Events, late and dropped counts summed over the owned partitions."""
        totals = {"events": 0, "late_events": 0, "dropped_events": 0}
        for state in self._partitions.values():
            s = state.aggregator.stats
            totals["events"] += s.events
            totals["late_events"] += s.late_events
            totals["dropped_events"] += s.dropped_events
        return totals


def _dump(raw: Any) -> bytes:
    try:
        return orjson.dumps(raw)
    except TypeError:
        return repr(raw).encode()
