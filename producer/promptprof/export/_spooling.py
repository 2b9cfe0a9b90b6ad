"""The disk spool as a wrapper of the Kafka exporter.

When a cycle has failed or waited for ``spool_after_s`` (at once when closing while Kafka fails),
the wrapper lets the cycles in flight come back, takes what the Kafka exporter holds and writes it
to the disk spool (:mod:`promptprof._spool`). While the spool holds records it is in *spool
mode*: every new cycle is packed and appended behind them and only the spool is sent, oldest
first, so order per series is kept; the cursor is committed after each acknowledged replay batch.
When the spool is empty again, cycles go straight to the Kafka exporter. While the spool is full
the wrapper is not ready, so nothing more is taken from the buffer, whose own bound then drops
the newest. At shutdown whatever is unsent is spooled (replayed by the next process using the
same ``spool_dir``); only what the full spool refuses is lost (``dropped_spool_full``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from promptprof._spool import Spool, SpoolRecord
from promptprof.export._base import Cycle, ExportStats
from promptprof.export._kafka import KafkaExporter
from promptprof.export._packing import Envelope

log = structlog.get_logger("promptprof")

REPLAY_RECORDS = 40  # spooled records sent per replay batch


class SpoolingExporter:
    """Keeps what the wrapped Kafka exporter cannot deliver in time in a disk spool."""

    durable = True

    def __init__(
        self, inner: KafkaExporter, directory: Path, max_bytes: int, after_s: float
    ) -> None:
        self.inner = inner
        self.directory = directory
        self.max_bytes = max_bytes
        self.after_s = after_s
        self.stats = inner.stats
        self._spool: Spool | None = None
        self._opened = False
        self._spooling = False  # the spool holds records: new cycles go behind them
        self._pending: list[Envelope] = []  # packed in spool mode, not yet on disk
        self._replay_acked: set[tuple[int, int]] = set()  # acked beyond the spool's cursor

    # -- the exporter protocol ----------------------------------------------------------------

    def start(self, stats: ExportStats) -> None:
        """Start the wrapped exporter; open the spool the first time (without one, if it cannot
        be opened: another process holds it, or the directory is unusable)."""
        self.stats = stats
        self.inner.start(stats)
        if not self._opened:
            self._opened = True
            self._open()

    def ready(self) -> bool:
        """In spool mode: while the spool has room. Otherwise: when the Kafka exporter is, or
        while it is not connected (so an outage from the start is spooled too)."""
        if self._spool is None:
            return self.inner.ready()
        if self._spooling:
            return not self._pending and not self._spool.full
        return self.inner.ready() or (self.inner.producer is None and not self.inner.held())

    async def export(self, cycle: Cycle) -> None:
        """Append the events to the spool in spool mode; else hand them to the Kafka exporter."""
        if not self._spooling:
            await self.inner.export(cycle)
            return
        self._pending.extend(self.inner.pack(cycle))
        self._spool_pending()

    async def progress(self, timeout: float) -> None:
        """Switch to spool mode when due; in it, spool what is pending and replay a batch."""
        self._note_spool()
        if self._spool is not None and not self._spooling and self._should_spool():
            if self.inner.in_flight():  # spool once these came back (order per series)
                await self.inner.wait_in_flight(min(timeout, 0.05))
                return
            self._enter_spool_mode()
        if self._spooling:
            await self._spool_step(timeout)
        else:
            await self.inner.progress(timeout)

    async def shutdown(self, deadline: float) -> None:
        """Deliver until ``deadline`` while Kafka answers; spool everything unsent."""
        spool = self._spool
        if spool is None:
            await self.inner.shutdown(deadline)
            return
        if not self._spooling and self.inner.failing_since is None:
            await self.inner.drain(deadline)
        # in-flight cycles are the oldest; one cancelled at the deadline may have reached Kafka
        # already, so it can be sent twice (documented at-least-once window)
        self._pending = self.inner.take_unsent() + self._pending
        self._spool_pending()
        lost = sum(e.events for e in self._pending)
        self._pending = []
        self.stats.dropped_spool_full += lost
        if lost:
            log.warning("promptprof.dropped_spool_full", events=lost)
        spool.close()
        self._spool = None
        self._note_held()
        await self.inner.close()

    # -- spool mode ---------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self._spool = Spool(self.directory, self.max_bytes)
        except Exception as exc:  # a locked or unusable directory: run without a spool
            self.stats.last_error = f"spool unavailable: {exc!r}"
            log.error("promptprof.spool_unavailable", dir=str(self.directory), error=repr(exc))
            return
        self._note_spool()
        if self._spool.pending_events:
            self._spooling = True
            log.info(
                "promptprof.spool_found", events=self._spool.pending_events,
                corrupt_frames=self._spool.corrupt_frames,
            )

    def _should_spool(self) -> bool:
        """Whether a cycle has failed or waited ``after_s`` (the Kafka exporter holds it)."""
        if not self.inner.held():
            return False
        since = [t for t in (self.inner.failing_since, self.inner.waiting_since) if t is not None]
        return bool(since) and time.monotonic() - min(since) >= self.after_s

    def _enter_spool_mode(self) -> None:
        self._spooling = True
        self._pending = self.inner.take_unsent() + self._pending
        log.warning("promptprof.spooling", dir=str(self.directory))
        self._spool_pending()

    def _spool_pending(self) -> None:
        """Append the pending envelopes to the spool; what does not fit stays pending."""
        spool = self._spool
        if spool is None or not self._pending:
            self._note_held()
            return
        written = spool.append([(e.spool_key(), e.value, e.events) for e in self._pending])
        self.stats.spooled_events += sum(e.events for e in self._pending[:written])
        self._pending = self._pending[written:]
        self._note_held()
        self._note_spool()

    async def _spool_step(self, timeout: float) -> None:
        """One step of spool mode: memory to disk, then one replay batch when Kafka may answer."""
        spool = self._spool
        assert spool is not None
        self._spool_pending()
        if not spool.pending_events and not self._pending:
            self._spooling = False
            self._replay_acked.clear()
            log.info("promptprof.spool_drained", replayed=self.stats.replayed_events)
            return
        wait = self.inner.retry_at - time.monotonic()
        if not spool.pending_events:  # the spool refused what is pending: wait for room
            wait = 0.05
        if wait > 0:
            await asyncio.sleep(min(timeout, wait))
            return
        if self.inner.producer is None and not await self.inner.connect():
            return
        await self._replay(spool)

    async def _replay(self, spool: Spool) -> None:
        """Send the oldest spooled records; commit the cursor past the acknowledged prefix."""
        records = spool.read(REPLAY_RECORDS, skip=self._replay_acked)
        if not records:
            return
        envelopes = [Envelope.from_spool(r.key, r.value, r.events) for r in records]
        failed = {id(e) for e in await self.inner.send(envelopes)}
        acked: list[SpoolRecord] = []
        first_failed: SpoolRecord | None = None
        for record, envelope in zip(records, envelopes, strict=True):
            if id(envelope) in failed:
                first_failed = first_failed or record
            else:
                acked.append(record)
        self.stats.replayed_events += sum(r.events for r in acked)
        if first_failed is None:
            spool.commit(acked)
            self.inner.note_success()
        else:
            spool.commit(acked, advance_to=(first_failed.segment, first_failed.offset))
            self.stats.retries += 1
            self.inner.note_failure()
        cursor = spool.cursor
        self._replay_acked = {
            pos for pos in self._replay_acked | {(r.segment, r.offset) for r in acked}
            if pos >= cursor
        }
        self._note_spool()

    def _note_held(self) -> None:
        self.inner.note_held()
        self.stats.pending_events += sum(e.events for e in self._pending)
        self.stats.held_bytes += sum(len(e.value) for e in self._pending)

    def _note_spool(self) -> None:
        spool = self._spool
        if spool is not None:
            self.stats.spool_bytes = spool.pending_bytes
            self.stats.spool_events = spool.pending_events
            self.stats.spool_corrupt_frames = spool.corrupt_frames
            self.stats.spool_write_errors = spool.write_errors
            self.stats.spool_oldest_age_s = round(spool.oldest_age_s(), 3)
