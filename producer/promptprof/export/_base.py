"""The exporter protocol and the counters every part of the producer writes.

Modelled on the OpenTelemetry SDK: the batching engine (:class:`promptprof._sender.Sender`)
takes recorded calls from the buffer on its own thread, builds their events and hands each
cycle's events to an exporter; the exporter delivers them (Kafka), keeps them (a test's memory),
or wraps another exporter (the disk spool). Everything runs on the engine's thread and event
loop, and no method may raise or block that loop on the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Cycle:
    """One cycle's events (call or quality event dicts) in the order recorded, and the series
    key of each (two lists: no tuple per event for the garbage collector to track)."""

    keys: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)


@dataclass
class ExportStats:
    """Counters of the engine and its exporter (written on the engine's thread, read anywhere).

    Every event taken from the buffer ends *settled* (see :meth:`settled`): sent, spooled or
    counted in a ``dropped_*`` counter, unless it is still held (``pending_events``).
    """

    sent_events: int = 0
    sent_records: int = 0
    sent_bytes: int = 0
    send_errors: int = 0
    retries: int = 0
    connect_failures: int = 0
    dropped_invalid: int = 0
    dropped_invalid_value: int = 0
    dropped_close: int = 0
    pending_events: int = 0
    held_bytes: int = 0
    last_error: str | None = None
    spooled_events: int = 0
    replayed_events: int = 0
    dropped_spool_full: int = 0
    spool_bytes: int = 0
    spool_events: int = 0
    spool_oldest_age_s: float = 0.0
    spool_corrupt_frames: int = 0
    spool_write_errors: int = 0

    @property
    def dropped(self) -> int:
        """Events dropped after the buffer took them, all reasons."""
        return (
            self.dropped_invalid + self.dropped_invalid_value + self.dropped_close
            + self.dropped_spool_full
        )

    def settled(self) -> int:
        """Events taken from the buffer and done with: sent directly, written to the disk spool
        (replays are not counted twice), or dropped with a reason."""
        return self.sent_events - self.replayed_events + self.spooled_events + self.dropped

    def drop_invalid(self, reason: str) -> None:
        """Count one event that cannot be built or encoded."""
        self.dropped_invalid += 1
        self.last_error = reason


class Exporter(Protocol):
    """Where the batching engine hands the events it built, one cycle at a time.

    The engine calls :meth:`start` at the start of each run of its event loop, then, until it
    stops, :meth:`export` whenever :meth:`ready` and a cycle is due, and :meth:`progress` in
    between; :meth:`shutdown` once at the end. Counts go into the :class:`ExportStats` given to
    :meth:`start`: ``sent_events`` for what it delivered, ``pending_events`` and ``held_bytes``
    for what it holds (the engine counts ``held_bytes`` against ``max_bytes_held``), a
    ``dropped_*`` counter for what it gives up.
    """

    durable: bool
    """Whether it keeps what it is handed at shutdown (a disk spool): the engine then hands it
    the buffer's leftovers instead of counting them as dropped."""

    def start(self, stats: ExportStats) -> None:
        """Begin a run of the engine's event loop (again after a crash), counting into ``stats``."""

    def ready(self) -> bool:
        """Whether it takes a cycle now (False while it holds all it may hold)."""

    async def export(self, cycle: Cycle) -> None:
        """Take one cycle's events: deliver, hold or count them."""

    async def progress(self, timeout: float) -> None:
        """Move deliveries and retries on, for at most ``timeout`` seconds (less when one ends)."""

    async def shutdown(self, deadline: float) -> None:
        """Deliver what it holds until ``deadline`` (``time.monotonic``), then count the rest as
        dropped (or keep it, when durable) and release its resources."""
