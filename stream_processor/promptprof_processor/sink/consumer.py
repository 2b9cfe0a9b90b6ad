"""The sink: closed windows from the windows topic into InfluxDB, committing after each write.

A record is a closed window or a late-score quality update of one (which rewrites the quality
fields of the window's point). A plain aiokafka consumer group with manual commits: a batch of
windows is rendered to line protocol, written (retried with backoff while InfluxDB is down), and
only then is its offset committed. A window that is written twice (after a crash between write and
commit, or after the worker re-closed it) overwrites its own point: the timestamp is the window
start and the tags are the series. While a write retries, the sink keeps polling with its
partitions paused, so that an outage longer than the consumer's max poll interval does not cost it
its place in the group.

A record goes to the dead-letter topic once, with a ``reason`` header, when it is not a window
(``not_a_window``), when a value of it cannot be written to InfluxDB exactly (``unwritable``), or
when InfluxDB refuses one of its points for good (``influxdb_refused``; the header holds
InfluxDB's reason). Refused points are found by bisecting the write
(:meth:`~promptprof_processor.sink.influx.RetryingWriter.write_finding_refused`): the other windows
of the poll are written, and a window whose points were all stored is never dead-lettered.
:attr:`WindowSink.dead_letters` counts them by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError

from promptprof._backoff import Backoff
from promptprof_processor.lost_log import LostLogs
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.influx import RetryingWriter, make_writer
from promptprof_processor.sink.lineprotocol import window_lines
from promptprof_processor.windows.figures import WindowAggregate
from promptprof_processor.windows.late_scores import QualityUpdate, is_quality_update

log = structlog.get_logger("promptprof.sink")

NOT_A_WINDOW = "not_a_window"
UNWRITABLE = "unwritable"
INFLUXDB_REFUSED = "influxdb_refused"


class RecordSender(Protocol):
    """What the sink needs of a Kafka producer: sending one record and waiting for its ack."""

    async def send_and_wait(
        self, topic: str, value: bytes, *, headers: list[tuple[str, bytes]]
    ) -> Any:
        """Send ``value`` to ``topic`` with ``headers``."""


class _Refused(Exception):
    """A record the sink dead-letters: ``kind`` counts it, ``reason`` says why."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class WindowSink:
    """Consumes the windows topic and writes every window to InfluxDB."""

    def __init__(
        self, settings: ProcessorSettings, group_id: str, writer: RetryingWriter | None = None,
        max_poll_interval_s: float = 300.0,
    ) -> None:
        """Sink for ``settings``' windows topic in consumer group ``group_id``."""
        self.settings = settings
        self.group_id = group_id
        self.max_poll_interval_s = max_poll_interval_s
        self.writer = writer or RetryingWriter(make_writer(
            settings.influx, settings.retention, settings.windows.all_widths_s))
        self.windows_written = 0
        self.dead_letters: Counter[str] = Counter()
        # for the health probe: the consumer, the windows of the batch being written and the
        # Kafka timestamp (ms) of its oldest (None when none is)
        self.consumer: AIOKafkaConsumer | None = None
        self.writing_count = 0
        self.writing_since_ms: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (a consumer group of its own: ``group_id``).

        Raises :class:`~promptprof_processor.sink.influx.InfluxWriteError` when InfluxDB
        refuses every write (credentials, an unknown database): nothing is committed then.
        """
        options = self.settings.kafka.client_options()
        consumer = AIOKafkaConsumer(
            self.settings.topics.windows, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=2000, fetch_max_wait_ms=100,
            max_poll_interval_ms=round(self.max_poll_interval_s * 1000), **options,
        )
        producer = AIOKafkaProducer(**options)
        await _start_with_retry(consumer, producer)
        self.consumer = consumer
        lost_logs = LostLogs()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                values = [r.value or b"" for records in batches.values() for r in records]
                if values:
                    self.writing_count = len(values)
                    self.writing_since_ms = min(
                        r.timestamp for records in batches.values() for r in records)
                    await write_polling(consumer, self.write(values, producer))
                    await _commit(consumer)
                    self.writing_since_ms = None
                await rewind_lost_logs(lost_logs, consumer, consumer.assignment() - batches.keys())
        finally:
            await consumer.stop()
            await producer.stop()
            await self.writer.close()

    async def write(self, values: list[bytes], dead_letters: RecordSender) -> None:
        """Write the windows in ``values`` (records of the windows topic), then dead-letter, once
        each, those that cannot be written or whose points InfluxDB refused. A write that
        raises sends no dead letter."""
        lines: list[str] = []
        owners: list[int] = []  # the index in ``values`` of each line's window
        refusals: dict[int, _Refused] = {}
        for index, value in enumerate(values):
            try:
                rendered = _render(value)
            except _Refused as unrenderable:
                refusals[index] = unrenderable
                continue
            lines.extend(rendered)
            owners.extend([index] * len(rendered))
        refused_lines = await self.writer.write_finding_refused(lines) if lines else {}
        for line, reason in sorted(refused_lines.items()):
            if owners[line] not in refusals:
                text = f"influxdb refused a point: {reason}"
                refusals[owners[line]] = _Refused(INFLUXDB_REFUSED, text)
        for index, refusal in sorted(refusals.items()):
            await self._dead_letter(dead_letters, values[index], refusal.kind, refusal.reason)
        self.windows_written += len(set(owners) - refusals.keys())

    async def _dead_letter(
        self, producer: RecordSender, value: bytes, kind: str, reason: str
    ) -> None:
        self.dead_letters[kind] += 1
        log.warning("promptprof.sink_dead_letter", kind=kind, reason=reason[:300])
        headers = [("reason", reason[:1000].encode()), ("stage", b"sink")]
        await producer.send_and_wait(self.settings.topics.dead_letter, value, headers=headers)


def _render(value: bytes) -> list[str]:
    """The line-protocol lines of a windows-topic record; raises :class:`_Refused`."""
    try:
        window = (QualityUpdate.from_bytes(value) if is_quality_update(value)
                  else WindowAggregate.from_bytes(value))
    except ValueError as exc:  # pydantic's ValidationError included
        raise _Refused(NOT_A_WINDOW, f"not a window: {exc}") from None
    try:
        return window_lines(window)
    except ValueError as exc:
        raise _Refused(UNWRITABLE, f"cannot be written to InfluxDB exactly: {exc}") from None


async def _commit(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.commit()
    except CommitFailedError as exc:
        # the group rebalanced meanwhile: whoever owns the partitions now writes these windows
        # again from the last commit, over the same points
        log.warning("promptprof.sink_commit_failed", error=repr(exc))


async def write_polling(consumer: AIOKafkaConsumer, write: Awaitable[None]) -> None:
    """Await ``write`` while polling the consumer with its partitions paused.

    A poll keeps the consumer in its group however long the write retries (aiokafka leaves the
    group once no poll ran for ``max_poll_interval_ms``). A partition that a rebalance assigns
    meanwhile is paused too, and its records are fetched again after the write.
    """
    consumer.pause(*consumer.assignment())
    keepalive = asyncio.create_task(_poll_paused(consumer))
    try:
        await write
    finally:
        keepalive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keepalive
        consumer.resume(*consumer.assignment())


async def _poll_paused(consumer: AIOKafkaConsumer) -> None:
    while True:
        for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
            consumer.seek(tp, records[0].offset)  # a newly assigned partition: read it later
            consumer.pause(tp)


async def rewind_lost_logs(
    lost_logs: LostLogs, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
    now: float | None = None,
) -> None:
    """Seek each of ``partitions`` (those without records in the last fetch) whose log the
    broker lost back to the start of its new log."""
    for tp in partitions:
        position = await consumer.position(tp)
        if lost_logs.lost(tp, position, consumer.highwater(tp), now):
            log.warning("promptprof.log_lost", topic=tp.topic, partition=tp.partition,
                        position=position, log_end=consumer.highwater(tp))
            await consumer.seek_to_beginning(tp)


async def _start_with_retry(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Start each client, retrying with backoff while Kafka is unreachable."""
    backoff = Backoff(0.2, 10.0)
    for client in clients:
        while True:
            try:
                await client.start()
                break
            except Exception as exc:
                delay = backoff.next()
                log.warning("promptprof.sink_kafka_unreachable", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
