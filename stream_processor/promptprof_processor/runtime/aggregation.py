"""The agent's work, partition by partition: records admitted in offset order, aggregated,
what they close published, the state checkpointed with the offset it reaches, and only then
the records acknowledged.

Faust's delivery order is not trusted (:mod:`promptprof_processor.runtime.position`): each record is
judged against the partition's position, records Faust skipped are read by the worker itself
(:mod:`promptprof_processor.runtime.gaps`), and so is a partition Faust stopped delivering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import faust
import structlog
from aiokafka.errors import KafkaError
from faust.types import TP

from promptprof.backoff import Backoff
from promptprof_processor.alerts import AlertDispatcher, AlertEngine
from promptprof_processor.runtime.checkpoint import Checkpoint
from promptprof_processor.runtime.gaps import Gap, GapNotRead, read_gap
from promptprof_processor.runtime.outbox import Outbox, Outgoing, deliver
from promptprof_processor.runtime.position import PartitionCursors, Verdict
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_processor.windows.partitions import DeadLetter, PartitionWindows

log = structlog.get_logger("promptprof.worker")


class Aggregation:
    """What the worker's agent, timers and rebalance handler do, over the partitions it owns."""

    def __init__(
        self, app: faust.App, settings: ProcessorSettings, table: Any, windows_topic: Any,
        dead_topic: Any, dispatcher: AlertDispatcher | None,
    ) -> None:
        """Aggregation for ``app``, checkpointing in ``table`` (Faust types are untyped here)."""
        self.app, self.table, self.dispatcher = app, table, dispatcher
        self.worker, self.calls_topic = settings.worker, settings.topics.calls
        self.windows_topic, self.dead_topic = windows_topic, dead_topic
        self.state = PartitionWindows(settings.windows, idle_timeout_s=self.worker.idle_timeout_s)
        self.engine = AlertEngine.from_settings(settings.alerts)
        self.client_options = settings.kafka.client_options()
        self.outbox = Outbox()
        self.cursors = PartitionCursors()
        self.unacked: dict[int, list[Any]] = {}
        self.last_checkpoint: dict[int, float] = {}
        self.changelog_offsets: dict[int, int] = {}  # last written per partition, kept on revoke
        self.revocations: dict[int, int] = {}
        self.stall_checked: dict[int, int] = {}  # a partition's position at the last stall check
        self.behind: set[int] = set()  # stalled partitions whose log holds more
        self.gap_retry_at: dict[int, float] = {}  # no gap reads for a partition before (monotonic)
        self.checkpointing = asyncio.Lock()

    async def handle(self, event: Any) -> None:
        """One record from the calls topic (a Faust event, acked by a later checkpoint)."""
        tp, offset = event.message.tp, event.message.offset
        if tp not in self.app.consumer.assignment():
            return  # fetched before its partition was revoked: the next owner has it
        if await self._admit(tp, offset):
            self._take(tp.partition, offset, event.value)
        self.unacked.setdefault(tp.partition, []).append(event)
        await self._checkpoint_due(tp.partition)

    def close_idle(self) -> None:
        """Close, by the wall clock, the windows of partitions that received nothing lately."""
        for partition, windows in self.state.close_idle(behind=self.behind).items():
            self._publish(partition, windows, [])

    async def checkpoint_quiet(self) -> None:
        """Checkpoint partitions with unacked records that the agent has not seen lately:
        Faust waits for every unacked event before a rebalance or shutdown completes."""
        for partition in [p for p, events in self.unacked.items()
                          if events and self.state.owns(p)]:
            await self._checkpoint_due(partition)

    async def catch_up_stalled(self) -> None:
        """Read, for each owned partition that Faust stopped delivering, what its log holds."""
        for tp in self.app.consumer.assignment():
            if tp.topic != self.calls_topic:
                continue
            try:
                await self._catch_up(tp)
            except (KafkaError, TimeoutError) as exc:
                log.warning("promptprof.stall_check_failed", partition=tp.partition,
                            error=repr(exc))

    def revoke(self, revoked: Iterable[Any]) -> None:
        """Forget revoked partitions (their checkpoints stay in the table)."""
        for tp in revoked:
            if tp.topic != self.calls_topic:
                continue
            partition = tp.partition
            self.state.forget(partition)
            self.engine.forget(partition)
            self.cursors.forget(partition)
            self.outbox.forget(partition)
            self.revocations[partition] = self.revocations.get(partition, 0) + 1
            self.behind.discard(partition)
            # Not acked: Faust forgets its acks of a revoked partition, so a late ack would
            # commit this owner's offsets under the next assignment (after a broker restart,
            # offsets of the lost log). Faust holds unacked events weakly.
            self.unacked.pop(partition, None)

    def _publish(
        self, partition: int, closed: list[WindowAggregate], dead: list[DeadLetter]
    ) -> None:
        """Send closed windows and dead letters, held in the outbox until the next checkpoint."""
        records = [Outgoing(self.windows_topic, w.to_bytes(), key=_window_key(w)) for w in closed]
        records.extend(
            Outgoing(self.dead_topic, letter.value,
                     headers={"reason": letter.reason[:1000].encode(), "stage": b"worker"})
            for letter in dead
        )
        self.outbox.send(partition, records)
        if self.dispatcher is not None and closed:
            self.dispatcher.submit(self.engine.observe(closed, partition))

    async def _save(self, partition: int, value: bytes) -> bool:
        # One record per checkpoint, delivered before the next: Tansu reports a log's end as
        # the last batch's first offset + 1, and Faust's recovery reads only up to that end, so
        # a batch of two checkpoints restored the older one (the newer one's calls were lost).
        # Returns False when the changelog's offsets went back: the broker lost its logs.
        key = _state_key(partition)
        self.table.data[key] = value
        written = await self.table.send_changelog(partition, key, value)
        previous = self.changelog_offsets.get(partition, -1)
        self.changelog_offsets[partition] = written.offset
        return bool(written.offset > previous)

    async def _checkpoint_due(self, partition: int) -> None:
        """Checkpoint ``partition`` if its interval has passed, then ack what it covers."""
        # The partition is explicit (not taken from the current event) so that the quiet-
        # partition loop can checkpoint too: Faust waits for every unacked event before a
        # rebalance or shutdown completes, and without new records the agent alone would never
        # ack the last ones.
        now = time.monotonic()
        if now - self.last_checkpoint.get(partition, 0.0) < self.worker.checkpoint_interval_s:
            return
        self.last_checkpoint[partition] = now
        async with self.checkpointing:
            if self.state.owns(partition):
                await self._checkpoint(partition)

    async def _checkpoint(self, partition: int) -> None:
        # Taken at once, as the agent goes on during the wait: the records covered, the
        # windows and dead letters they produced, and the state and position they reached.
        covered, sent = self.unacked.pop(partition, []), self.outbox.take(partition)
        saved = self._snapshot(partition)
        owner = self.revocations.get(partition, 0)
        # The state may not be saved before the broker has the windows it no longer holds.
        await deliver(sent)
        if self.revocations.get(partition, 0) != owner:
            return  # revoked meanwhile: acks now would commit offsets for the next owner
        if not await self._save(partition, saved.pack()):
            await self._read_again(partition)
        for pending in covered:
            pending.ack()

    async def _read_again(self, partition: int) -> None:
        # The broker lost its data (a memory-only broker restarted): the calls log starts
        # again at offset 0, and the position saved with the state points into the old one.
        # Keep the open windows (their calls were counted), read the new log from its start.
        tp = TP(self.calls_topic, partition)
        start = await self._earliest(tp)
        if not self.state.owns(partition):
            return  # revoked during the wait: its next owner restores it
        log.warning("promptprof.broker_lost_data", partition=partition,
                    old_next_offset=self.cursors.next_offset(partition), new_next_offset=start)
        self.cursors.start(partition, start)
        await self._save(partition, self._snapshot(partition).pack())

    def _snapshot(self, partition: int) -> Checkpoint:
        return Checkpoint(self.state.checkpoint(partition), self.engine.state_bytes(partition),
                          self.cursors.next_offset(partition))

    async def _owned(self, tp: TP) -> bool:
        """Whether the partition's state is loaded, restoring it first if it is not."""
        if not self.state.owns(tp.partition):
            await self._restore(tp)
        return self.state.owns(tp.partition)

    async def _restore(self, tp: TP) -> None:
        saved = Checkpoint.unpack(self.table.get(_state_key(tp.partition)))
        next_offset = saved.next_offset
        if next_offset is None:
            next_offset = await self._earliest(tp)
        if tp not in self.app.consumer.assignment() or self.state.owns(tp.partition):
            return  # revoked, or restored by the stall check, during the wait
        self.state.restore(tp.partition, saved.windows)
        self.engine.restore(tp.partition, saved.alerts)
        self.cursors.start(tp.partition, next_offset)
        log.info("promptprof.partition_restored", partition=tp.partition,
                 next_offset=next_offset, from_checkpoint=saved.next_offset is not None)

    async def _earliest(self, tp: TP) -> int:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return int((await self.app.consumer.earliest_offsets(tp)).get(tp, 0))
            except (KafkaError, TimeoutError) as exc:
                delay = backoff.next()
                log.warning("promptprof.offsets_unavailable", partition=tp.partition,
                            error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    def _take(self, partition: int, offset: int, value: bytes | None) -> None:
        """Aggregate the partition's next record and publish what it closed."""
        outcome = self.state.handle(partition, value)
        self.cursors.taken(partition, offset)
        self._publish(partition, outcome.closed, outcome.dead)

    async def _fill_gap(self, tp: TP, offset: int) -> bool:
        # Records before ``offset`` never came: read them ourselves (see gaps.py).
        start = self.cursors.next_offset(tp.partition)
        try:
            gap = await read_gap(self.client_options, tp.topic, tp.partition, start, offset)
        except (GapNotRead, KafkaError) as exc:
            log.warning("promptprof.gap_not_read", partition=tp.partition, start=start,
                        end=offset, error=repr(exc))
            self.gap_retry_at[tp.partition] = time.monotonic() + self.worker.stall_check_s
            return False
        if not self.state.owns(tp.partition):
            return False  # revoked during the read
        if self.cursors.next_offset(tp.partition) != start:  # moved on (or restarted) meanwhile
            return self.cursors.judge(tp.partition, offset) is Verdict.TAKE
        self._take_gap(tp.partition, gap, offset)
        log.info("promptprof.gap_read", partition=tp.partition, start=start, end=offset,
                 records=len(gap.records), complete=gap.complete)
        if not gap.complete:
            # The broker does not serve the whole range (yet): the record may be from a log
            # it lost since. Not every record after it tries again; the stall check does.
            self.gap_retry_at[tp.partition] = time.monotonic() + self.worker.stall_check_s
            return False
        return self.cursors.judge(tp.partition, offset) is Verdict.TAKE

    def _take_gap(self, partition: int, gap: Gap, end: int) -> None:
        skipped = 0
        for record_offset, value in gap.records:
            # an offset the log lacks (expired, or lost by the broker) cannot come later
            skipped += self.cursors.skip_to(partition, record_offset)
            if self.cursors.judge(partition, record_offset) is Verdict.TAKE:
                self._take(partition, record_offset, value)
        if gap.complete:
            skipped += self.cursors.skip_to(partition, end)
        if skipped:
            log.warning("promptprof.offsets_skipped", partition=partition, offsets=skipped,
                        reason="not in the log: expired, or lost by the broker")

    async def _admit(self, tp: TP, offset: int) -> bool:
        """Whether the record at ``offset`` is the partition's next one, once the records
        before it that Faust skipped are read and aggregated."""
        if not await self._owned(tp):
            return False
        verdict = self.cursors.judge(tp.partition, offset)
        retry_at = self.gap_retry_at.get(tp.partition, 0.0)
        if verdict is Verdict.AHEAD and time.monotonic() >= retry_at:
            return await self._fill_gap(tp, offset)
        return verdict is Verdict.TAKE

    async def _catch_up(self, tp: TP) -> None:
        # Faust now and then stops delivering a partition altogether (seen after a broker
        # restart: rewound, and then nothing fetched). A partition whose position has not
        # moved since the last check while its log holds more is read by the worker itself,
        # and is not idle meanwhile (the idle timer would close its windows by the clock).
        if self.app.rebalancing or not await self._owned(tp):
            return
        position = self.cursors.next_offset(tp.partition)
        if self.stall_checked.get(tp.partition) != position:
            self.stall_checked[tp.partition] = position
            self.behind.discard(tp.partition)
            return
        end = (await self.app.consumer.highwaters(tp)).get(tp, 0)
        if end <= position or not self.state.owns(tp.partition):
            self.behind.discard(tp.partition)
            return
        self.behind.add(tp.partition)
        log.warning("promptprof.partition_stalled", partition=tp.partition,
                    next_offset=position, log_end=end)
        await self._fill_gap(tp, end)


def _state_key(partition: int) -> bytes:
    """The table key of a partition's checkpoint."""
    return b"p%d" % partition


def _window_key(window: WindowAggregate) -> bytes:
    """The windows topic key of a closed window: its series and width."""
    tags = window.series
    return "\x1f".join(
        (tags.service, tags.prompt_id, tags.prompt_version, tags.model, str(window.width_s))
    ).encode()
