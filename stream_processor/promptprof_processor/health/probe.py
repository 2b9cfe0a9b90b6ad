"""Samples a running worker into :class:`~promptprof_processor.health.figures.WorkerFigures`.

It reads what the calls worker, the sink and the alert dispatcher already keep; nothing here
changes them. Consumer lag uses the high watermark of the consumer's last fetch
(``consumer.highwater``), not ListOffsets: the local broker answers "latest" wrongly.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from promptprof_processor.health.figures import PartitionFigures, WorkerFigures

if TYPE_CHECKING:
    from promptprof_processor.alerts import AlertDispatcher
    from promptprof_processor.runtime.adapter import CallsWorker
    from promptprof_processor.sink.consumer import WindowSink

POSITION_TIMEOUT_S = 1.0


def default_worker_name() -> str:
    """The host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _Previous:
    events: int
    monotonic_s: float


class WorkerProbe:
    """Reads the figures of one worker's parts (any of them may be absent)."""

    def __init__(
        self, worker: str, calls: CallsWorker, sink: WindowSink | None = None,
        dispatcher: AlertDispatcher | None = None,
    ) -> None:
        """A probe of ``calls`` (and ``sink``, ``dispatcher`` when they run), tagged ``worker``."""
        self.worker, self.calls, self.sink, self.dispatcher = worker, calls, sink, dispatcher
        self.health_write_failures = 0  # of the self-metric points themselves
        self.health_lines_dropped = 0
        self._previous: dict[int, _Previous] = {}

    def alive(self) -> bool:
        """The calls worker runs (started, not stopped)."""
        return self.calls.consumer is not None and not self.calls.stopped.is_set()

    def ready(self) -> bool:
        """Its partitions are assigned and restored (and it is alive)."""
        return self.alive() and self.calls.ready

    async def sample(self) -> WorkerFigures:
        """The figures now."""
        backlog, oldest_s = await self._sink_backlog()
        sink_failures = self.sink.writer.failures if self.sink else 0
        dispatcher = self.dispatcher
        return WorkerFigures(
            worker=self.worker, time_ns=time.time_ns(), ready=self.ready(),
            partitions=self._partitions(),
            sink_backlog=backlog, sink_oldest_unwritten_s=oldest_s,
            influx_write_failures=sink_failures + self.health_write_failures + (
                dispatcher.influx_write_failures if dispatcher else 0),
            influx_points_rejected=self.sink.writer.rejected if self.sink else 0,
            sink_dead_letters=dict(self.sink.dead_letters) if self.sink else {},
            webhook_failed_attempts=dispatcher.webhook_failed_attempts if dispatcher else 0,
            webhook_dead_lettered=dispatcher.stats.dead_lettered if dispatcher else 0,
            alerts_dropped=sum(dispatcher.stats.dropped.values()) if dispatcher else 0,
            health_lines_dropped=self.health_lines_dropped,
        )

    def _partitions(self) -> list[PartitionFigures]:
        calls, consumer = self.calls, self.calls.consumer
        now_s, now_ms = time.monotonic(), time.time() * 1000
        by_partition: dict[int, Counter[str]] = {}
        for (partition, reason), count in calls.dead_letters.items():
            by_partition.setdefault(partition, Counter())[reason] += count
        figures = []
        for partition, owned in sorted(calls.owned.items()):
            run = owned.run
            end = consumer.highwater(TopicPartition(calls.settings.topics.calls, partition)) \
                if consumer is not None else None
            lag = max(0, end - run.next_offset) if end is not None else 0
            last_ms = calls.last_record_ms.get(partition)
            stats = run.windows.stats
            overflow = run.windows.overflow_events
            figures.append(PartitionFigures(
                partition=partition, lag_records=lag,
                lag_s=max(0.0, (now_ms - last_ms) / 1000) if lag and last_ms else 0.0,
                events=stats.events, events_per_s=self._rate(partition, stats.events, now_s),
                late_events=stats.late_events, open_series=run.windows.open_series,
                overflow_events=sum(overflow.values()), overflowed_prompts=len(overflow),
                checkpoint_age_s=max(0.0, now_s - owned.last_checkpoint_s),
                next_offset=run.next_offset,
                dead_letters=dict(by_partition.get(partition, {})),
            ))
        return figures

    def _rate(self, partition: int, events: int, now_s: float) -> float:
        """Events per second since the previous sample (0 on the first, or after a restore
        that went back)."""
        previous = self._previous.get(partition)
        self._previous[partition] = _Previous(events, now_s)
        if previous is None or now_s <= previous.monotonic_s or events < previous.events:
            return 0.0
        return (events - previous.events) / (now_s - previous.monotonic_s)

    async def _sink_backlog(self) -> tuple[int, float]:
        """Windows not yet written (held in the batch being written, or readable), and the age
        of the oldest held one in seconds."""
        sink = self.sink
        if sink is None or sink.consumer is None:
            return 0, 0.0
        held_since = sink.writing_since_ms
        backlog = await _readable(sink.consumer)
        if held_since is None:
            return backlog, 0.0
        return backlog + sink.writing_count, max(0.0, time.time() - held_since / 1000)


async def _readable(consumer: AIOKafkaConsumer) -> int:
    """Records between the consumer's positions and the ends of its partitions.

    The end is the last fetch's high watermark (right on Tansu, whose ListOffsets answers the
    newest batch's first offset + 1), or ListOffsets' answer when larger: the sink pauses its
    partitions while a write retries, and a paused partition is not fetched."""
    assignment = list(consumer.assignment())
    try:
        listed = await asyncio.wait_for(consumer.end_offsets(assignment), POSITION_TIMEOUT_S)
    except Exception:  # a rebalance under way (or timed out): the fetches' ends alone
        listed = {}
    total = 0
    for tp in assignment:
        end = max((e for e in (consumer.highwater(tp), listed.get(tp)) if e is not None),
                  default=None)
        if end is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
        except Exception:  # a rebalance under way (or timed out): counted at the next sample
            continue
        total += max(0, end - position)
    return total
