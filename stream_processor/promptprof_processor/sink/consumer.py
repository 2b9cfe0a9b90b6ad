"""The sink: closed windows from the windows topic into InfluxDB, committing after each write.

A plain aiokafka consumer group with manual commits: a batch of windows is rendered to line
protocol, written (retried with backoff while InfluxDB is down), and only then is its offset
committed. A window that is written twice (after a crash between write and commit, or after the
worker re-closed it) overwrites its own point: the timestamp is the window start and the tags are
the series. Records that are not windows go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from promptprof.config import Settings
from promptprof_processor.sink.influx import RetryingWriter, make_writer
from promptprof_processor.sink.lineprotocol import window_lines
from promptprof_processor.windows.figures import WindowAggregate

log = structlog.get_logger("promptprof.sink")


class WindowSink:
    """Consumes the windows topic and writes every window to InfluxDB."""

    def __init__(
        self, settings: Settings, group_id: str, writer: RetryingWriter | None = None
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.writer = writer or RetryingWriter(make_writer(settings.influx))
        self.windows_written = 0
        self.dead_letters = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (a consumer group of its own: ``group_id``)."""
        options = self.settings.kafka.client_options()
        consumer = AIOKafkaConsumer(
            self.settings.topics.windows, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=2000, fetch_max_wait_ms=100,
            **options,
        )
        producer = AIOKafkaProducer(**options)
        await _start_with_retry(consumer, producer)
        lost_logs = LostLogs()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                values = [r.value for records in batches.values() for r in records]
                if values:
                    await self._write(values, producer)
                    await consumer.commit()
                await lost_logs.rewind(consumer, consumer.assignment() - batches.keys())
        finally:
            await consumer.stop()
            await producer.stop()
            await self.writer.close()

    async def _write(self, values: list[bytes | None], producer: AIOKafkaProducer) -> None:
        lines: list[str] = []
        windows = 0
        for value in values:
            try:
                window = WindowAggregate.from_bytes(value or b"")
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(producer, value or b"", f"not a window: {exc}")
                continue
            lines.extend(window_lines(window))
            windows += 1
        if lines and not await self.writer.write(lines):
            for value in values:
                await self._dead_letter(producer, value or b"", "influxdb rejected the points")
            return
        self.windows_written += windows

    async def _dead_letter(self, producer: AIOKafkaProducer, value: bytes, reason: str) -> None:
        self.dead_letters += 1
        headers = [("reason", reason[:1000].encode()), ("stage", b"sink")]
        await producer.send_and_wait(self.settings.topics.dead_letter, value, headers=headers)


class LostLogs:
    """Seeks partitions whose position stays past the log's end back to their start.

    Only a broker that lost its data (a memory-only broker restarted) has a log end below a
    consumer's position; Tansu then answers fetches with no records and no error, so the
    consumer would wait until the new log grew past the old offset. The end is the fetch's
    high watermark (Tansu's ListOffsets answers the last batch's first offset + 1), and it must
    stay below the position for ``grace_s``: a fetch answer now and then runs a record behind.
    """

    def __init__(self, grace_s: float = 2.0) -> None:
        """Watch positions; rewind one that stays past the end for ``grace_s``."""
        self.grace_s = grace_s
        self._since: dict[TopicPartition, float] = {}

    async def rewind(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
        now: float | None = None,
    ) -> None:
        """Check ``partitions`` (those without records in the last fetch)."""
        now = time.monotonic() if now is None else now
        for tp in partitions:
            end, position = consumer.highwater(tp), await consumer.position(tp)
            if end is None or position <= end:
                self._since.pop(tp, None)
            elif now - self._since.setdefault(tp, now) >= self.grace_s:
                log.warning("promptprof.log_lost", topic=tp.topic, partition=tp.partition,
                            position=position, log_end=end)
                await consumer.seek_to_beginning(tp)
                del self._since[tp]


async def _start_with_retry(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    delay = 0.2
    for client in clients:
        while True:
            try:
                await client.start()
                break
            except Exception as exc:
                log.warning("promptprof.sink_kafka_unreachable", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
