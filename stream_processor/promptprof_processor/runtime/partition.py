"""One assigned partition's run: its position, open windows, alert state, outbox and checkpoint.

A :class:`PartitionRun` is created when a worker is assigned a partition (fresh, or from the
partition's checkpoint) and dropped when the partition is revoked. It is pure: it imports neither
Faust nor aiokafka, reads no clock of its own, and does no I/O. The adapter
(:mod:`promptprof_processor.runtime.adapter`) hands it records in the order the log holds them,
sends what it returns, and writes its checkpoints.

Exactly once. The run keeps the offset of the next record to aggregate. A record before it is
already in the state and skipped; a record past it means the log no longer holds the offsets
between (deleted by retention or compaction): they are skipped and counted. A checkpoint holds
the state and that offset together, so a run restored from it, fed the log from any offset at or
before it, gives the same windows as a run that never stopped.

Outbox. What a record closes or updates (windows, late scores' quality updates, dead letters,
alerts) is returned by the same call that changes the state, and kept in the run's outbox until the
next checkpoint takes it: the adapter must have every output of an epoch on the broker before it
commits the epoch's head, since the state saved with it no longer holds the windows those outputs
carry.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from promptprof_processor.alerts.detector import AlertEngine
from promptprof_processor.alerts.events import Alert
from promptprof_processor.ingest.records import RecordReader, Rejected, dump
from promptprof_processor.ingest.validation import CallColumns, Record
from promptprof_processor.runtime.checkpoint import Head
from promptprof_processor.runtime.position import Position
from promptprof_processor.settings import WindowSettings
from promptprof_processor.windows.aggregator import StateError, WindowAggregator
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_processor.windows.late_scores import QualityUpdate

log = structlog.get_logger("promptprof.worker")


@dataclass(frozen=True, slots=True)
class Output:
    """Something a record or the clock produced: a closed window, the new quality figures of a
    closed window, a rejected part of the record at ``offset`` (None when the clock closed it),
    or an alert."""

    window: WindowAggregate | None = None
    quality: QualityUpdate | None = None
    rejected: Rejected | None = None
    alert: Alert | None = None
    offset: int | None = None


@dataclass(slots=True)
class Epoch:
    """A checkpoint to write: ``document`` cut into chunks, then a head, once ``outputs`` (what
    the run produced since its last checkpoint) are all on the broker."""

    epoch: int
    document: dict[str, Any]
    next_offset: int
    outputs: list[Output] = field(default_factory=list)

    @property
    def base(self) -> bool:
        """Whether the document is the whole state (else: what changed since the last)."""
        return bool(self.document["base"])


@dataclass(slots=True)
class Clock:
    """The times a call is made at: wall clock (ns since the epoch) and a monotonic one (s)."""

    wall_ns: int
    monotonic_s: float


class PartitionRun:
    """The aggregation of one partition, from its checkpoint (or start) to its revocation."""

    def __init__(
        self, partition: int, settings: WindowSettings, *, next_offset: int,
        windows: WindowAggregator | None = None, alerts: AlertEngine | None = None,
        reader: RecordReader | None = None, idle_timeout_s: float = 5.0,
        run_id: int | None = None,
    ) -> None:
        """A run of ``partition`` whose next record is at ``next_offset``, holding ``windows``
        (empty by default) and judging closed windows with ``alerts`` (none by default; its
        state for ``partition`` must already be loaded)."""
        self.partition = partition
        self.settings = settings
        self.position = Position(next_offset)
        self.windows = windows or WindowAggregator(settings)
        self.alerts = alerts
        self.reader = reader or RecordReader(settings)
        self.idle_timeout_s = idle_timeout_s
        self.run_id = run_id if run_id is not None else random.getrandbits(63)
        self.epoch = -1  # the last epoch taken; the first (0) is a base
        self.head: Head | None = None  # the last head committed by this run
        self.bytes_since_base = 0
        self.base_bytes = 0
        self.behind = False  # the adapter knows the log holds records the run has not had
        self._outbox: list[Output] = []
        self._last_record_s: float | None = None

    @classmethod
    def restore(
        cls, partition: int, settings: WindowSettings, head: Head,
        documents: list[dict[str, Any]], alerts: AlertEngine | None = None, **options: Any,
    ) -> PartitionRun:
        """A run that goes on from the checkpoint ``head`` and its ``documents`` (a base and
        the epochs after it, in order: :func:`~promptprof_processor.runtime.checkpoint.assemble`).
        Raises :class:`~promptprof_processor.windows.aggregator.StateError` when the state was
        written with other window widths or label dimensions."""
        windows = WindowAggregator.from_changes((d["windows"] for d in documents), settings)
        if alerts is not None:
            alerts.restore_states(partition, _alert_entries(documents))
        return cls(partition, settings, next_offset=head.next_offset, windows=windows,
                   alerts=alerts, **options)

    @property
    def next_offset(self) -> int:
        """The offset of the next record to aggregate."""
        return self.position.next_offset

    def take(self, offset: int, value: bytes | None, clock: Clock) -> list[Output]:
        """Aggregate the record at ``offset`` if it is the next one (after skipping offsets
        the log lacks); return what it closed or rejected (also kept for the checkpoint)."""
        if not self.position.admit(offset):
            return []
        self._last_record_s = clock.monotonic_s
        try:
            rejected = self._aggregate(value, clock)
        except Exception as exc:  # a bug must not stop the partition: keep the record to replay
            log.exception("promptprof.record_failed", partition=self.partition, offset=offset)
            rejected = [Rejected(value or b"", f"internal error: {exc!r}")]
        outputs = [Output(rejected=r, offset=offset) for r in rejected]
        wall = clock.wall_ns - self.settings.allowed_lateness_ns
        outputs += self._closed(self.windows.advance(min(self.windows.watermark_ns, wall)))
        self._outbox.extend(outputs)
        return outputs

    def _aggregate(self, value: bytes | None, clock: Clock) -> list[Rejected]:
        read = self.reader.read(value, clock.wall_ns)
        if isinstance(read.events, CallColumns):
            self.windows.add_columns(read.events)
            return read.rejected
        return read.rejected + _too_late(self.windows.add(read.events))

    def close_idle(self, clock: Clock) -> list[Output]:
        """Close windows by the wall clock when no record came for the idle timeout (and the
        log holds none the run has not had: see :attr:`behind`)."""
        idle = (self._last_record_s is None
                or clock.monotonic_s - self._last_record_s >= self.idle_timeout_s)
        if not idle or self.behind:
            return []
        outputs = self._closed(
            self.windows.advance(clock.wall_ns - self.settings.allowed_lateness_ns))
        self._outbox.extend(outputs)
        return outputs

    def restart_log(self, first_offset: int) -> None:
        """The broker lost the partition's log (a memory-only broker restarted): its new log
        starts at ``first_offset``. The open windows stay (their calls were counted)."""
        log.warning("promptprof.broker_lost_data", partition=self.partition,
                    old_next_offset=self.next_offset, new_next_offset=first_offset)
        self.position = Position(first_offset)

    def checkpoint(self, rebase: bool = False) -> Epoch:
        """The next epoch: the state that changed since the last one (all of it for the first
        epoch, when ``rebase`` is asked, or when the epochs since the base have grown past it),
        with the outputs it must wait for."""
        self.epoch += 1
        base = rebase or self.epoch == 0 or self.bytes_since_base > self.base_bytes
        document = {
            "base": base,
            "next_offset": self.next_offset,
            "windows": self.windows.snapshot() if base else self.windows.changes(),
            "alerts": _encode_alerts(self.alerts, self.partition, base),
        }
        outputs, self._outbox = self._outbox, []
        return Epoch(self.epoch, document, self.next_offset, outputs)

    def committed(self, epoch: Epoch, head: Head, size: int) -> None:
        """The epoch's head is on the broker; ``size`` bytes of chunks were written for it."""
        self.head = head
        if epoch.base:
            self.base_bytes, self.bytes_since_base = size, 0
        else:
            self.bytes_since_base += size

    def _closed(self, windows: list[WindowAggregate]) -> list[Output]:
        """The outputs of an advance that closed ``windows``."""
        outputs = [Output(window=w) for w in windows]
        # rollups (hourly) close an hour late: judging them would page about an incident late
        rollups = self.settings.rollup_widths_s
        judged = [w for w in windows if w.width_s not in rollups] if rollups else windows
        if self.alerts is not None and judged:
            outputs += [Output(alert=a)
                        for a in self.alerts.observe(judged, self.partition)]
        return outputs + [Output(quality=update) for update in self.windows.quality_updates()]


def _too_late(scores: Sequence[tuple[Record, str]]) -> list[Rejected]:
    return [Rejected(dump(score), reason) for score, reason in scores]


def _encode_alerts(alerts: AlertEngine | None, partition: int, base: bool) -> dict[str, Any]:
    """The alert state entries (all of them for a base, else those changed), JSON-native:
    keys and values in base64, a deleted entry as None."""
    if alerts is None:
        return {}
    entries: dict[bytes, bytes | None] = (
        dict(alerts.all_states(partition)) if base else alerts.changed_states(partition))
    return {_b64(key): None if value is None else _b64(value) for key, value in entries.items()}


def _alert_entries(documents: list[dict[str, Any]]) -> dict[bytes, bytes]:
    """The alert state entries after a base and the epochs since, in order."""
    entries: dict[bytes, bytes] = {}
    for document in documents:
        if document["base"]:
            entries.clear()
        for key, value in document["alerts"].items():
            if value is None:
                entries.pop(base64.b64decode(key), None)
            else:
                entries[base64.b64decode(key)] = base64.b64decode(value)
    return entries


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


__all__ = ["Clock", "Epoch", "Output", "PartitionRun", "StateError"]
