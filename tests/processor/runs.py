"""Partition runs driven as the adapter drives them, without Kafka: records fed in offset
order, checkpoints cut into chunks and assembled back from an in-memory log."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from promptprof_processor.alerts import AlertEngine
from promptprof_processor.ingest.records import RecordReader, Rejected
from promptprof_processor.runtime.checkpoint import Head, assemble, cut
from promptprof_processor.runtime.partition import Clock, Output, PartitionRun
from promptprof_processor.settings import WindowSettings
from promptprof_processor.windows.figures import WindowAggregate


def clock(now_ns: int | None = None, monotonic_s: float | None = None) -> Clock:
    """A clock at ``now_ns`` (now by default)."""
    return Clock(time.time_ns() if now_ns is None else now_ns,
                 time.monotonic() if monotonic_s is None else monotonic_s)


@dataclass
class Outcome:
    """What one record produced."""

    closed: list[WindowAggregate] = field(default_factory=list)
    dead: list[Rejected] = field(default_factory=list)
    accepted: int = 0


def outcome(outputs: Iterable[Output], accepted: int = 0) -> Outcome:
    """Outputs sorted into closed windows and dead letters."""
    result = Outcome(accepted=accepted)
    for output in outputs:
        if output.window is not None:
            result.closed.append(output.window)
        elif output.rejected is not None:
            result.dead.append(output.rejected)
    return result


class Runs:
    """One run per partition, created on its first record, each fed its next offset."""

    def __init__(
        self, settings: WindowSettings, idle_timeout_s: float = 5.0,
        max_record_bytes: int | None = None, alerts: AlertEngine | None = None,
    ) -> None:
        """Runs of ``settings`` (records up to ``max_record_bytes``)."""
        self.settings, self.idle_timeout_s, self.alerts = settings, idle_timeout_s, alerts
        self.reader = (RecordReader(settings) if max_record_bytes is None
                       else RecordReader(settings, max_record_bytes))
        self.runs: dict[int, PartitionRun] = {}

    def run(self, partition: int) -> PartitionRun:
        """The partition's run (a fresh one from offset 0 at first)."""
        if partition not in self.runs:
            if self.alerts is not None:
                self.alerts.restore(partition, None)
            self.runs[partition] = PartitionRun(
                partition, self.settings, next_offset=0, reader=self.reader, alerts=self.alerts,
                idle_timeout_s=self.idle_timeout_s)
        return self.runs[partition]

    def handle(self, partition: int, value: bytes | None, now_ns: int | None = None) -> Outcome:
        """Feed ``value`` as the partition's next record."""
        run = self.run(partition)
        before = run.windows.stats.events
        outputs = run.take(run.next_offset, value, clock(now_ns))
        return outcome(outputs, run.windows.stats.events - before)

    def close_idle(self, now_ns: int) -> dict[int, list[WindowAggregate]]:
        """What the idle timer closes, by partition."""
        closed = {p: outcome(run.close_idle(clock(now_ns))).closed for p, run in self.runs.items()}
        return {p: windows for p, windows in closed.items() if windows}


class MemoryLog:
    """The two checkpoint topics of one partition, in memory: chunks and heads."""

    def __init__(self, chunk_bytes: int = 256) -> None:
        """Small chunks by default, so that every checkpoint spans several."""
        self.chunk_bytes = chunk_bytes
        self.chunks: list[bytes] = []
        self.heads: list[Head] = []
        self.largest = 0

    def checkpoint(self, run: PartitionRun, rebase: bool = False) -> list[Output]:
        """Write the run's next epoch and commit it; return the outputs it waited for."""
        epoch = run.checkpoint(rebase)
        chunks = [c.pack() for c in cut(run.run_id, epoch.epoch, epoch.document,
                                        self.chunk_bytes)]
        first = len(self.chunks)
        self.chunks += chunks
        self.largest = max(self.largest, *map(len, chunks))
        base = first if epoch.base or run.head is None else run.head.base_offset
        head = Head(run.run_id, epoch.epoch, epoch.next_offset, base, len(self.chunks))
        self.heads.append(head)
        run.committed(epoch, head, sum(map(len, chunks)))
        return epoch.outputs

    def restore(self, partition: int, settings: WindowSettings, **options: Any) -> PartitionRun:
        """A run restored from the newest head."""
        head = self.heads[-1]
        return PartitionRun.restore(partition, settings, head,
                                    assemble(head, enumerate(self.chunks)),
                                    **options)
