"""The producers' stats events (:mod:`promptprof._selfstats`) from their topic into InfluxDB.

Measurement ``promptprof_producer``, one point per report at the producer's time: tags
``service``, ``environment``, ``host``, ``pid``; a float field per counter of
:meth:`promptprof._profiler.Profiler.stats` (``recorded``, ``sent_events``, ``dropped`` and each
``dropped_*`` reason, ``spooled_events``, ``replayed_events``, ``buffer_depth``, ``bytes_held``,
``retries``, ``send_errors``...), ``final`` and ``sender_alive`` (bool), ``last_error``
(string, when there is one) and ``interval_s``.

Like the sink, a consumer group of its own commits only after the write (retried with backoff
while InfluxDB is down). A record that is not a valid stats event is counted and logged, and
skipped.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

import orjson
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from promptprof._event import TAG_SAFE
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.influx import RetryingWriter, make_writer
from promptprof_processor.sink.lineprotocol import FieldValue, encode_line

log = structlog.get_logger("promptprof.health")

PRODUCER_MEASUREMENT = "promptprof_producer"
MAX_COUNTERS = 100
StatName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class ProducerStats(BaseModel):
    """One stats event of a producer (see :func:`promptprof._selfstats.stats_event`)."""

    kind: Literal["producer_stats"]
    schema_version: Literal[1]
    service: str = Field(min_length=1, max_length=128, pattern=TAG_SAFE)
    environment: str = Field(default="", max_length=64, pattern=TAG_SAFE)
    host: str = Field(min_length=1, max_length=255, pattern=TAG_SAFE)
    pid: int = Field(ge=0)
    time_unix_nano: int = Field(gt=0)
    interval_s: float = Field(ge=0)
    final: bool = False
    sender_alive: bool = True
    last_error: str | None = Field(default=None, max_length=1000)
    stats: dict[StatName, float] = Field(max_length=MAX_COUNTERS)

    def line(self) -> str:
        """The ``promptprof_producer`` point of this report."""
        tags = {"service": self.service, "environment": self.environment, "host": self.host,
                "pid": str(self.pid)}
        fields: dict[str, FieldValue | None] = {
            **{name: float(v) for name, v in self.stats.items()},
            "final": self.final, "sender_alive": self.sender_alive,
            "last_error": self.last_error, "interval_s": float(self.interval_s),
        }
        return encode_line(PRODUCER_MEASUREMENT, tags, fields, self.time_unix_nano)


def parse_stats(value: bytes | None) -> ProducerStats | None:
    """The stats event in a record, or None (logged) when it is none."""
    try:
        stats = ProducerStats.model_validate(orjson.loads(value or b""))
        stats.line()  # a value that cannot be written exactly (ValueError) is refused here
    except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
        log.warning("promptprof.producer_stats_invalid", error=str(exc)[:300])
        return None
    return stats


class ProducerStatsSink:
    """Consumes the producer-stats topic and writes each report to InfluxDB."""

    def __init__(self, settings: ProcessorSettings, group_id: str) -> None:
        """A sink for ``settings.topics.producer_stats`` in consumer group ``group_id``."""
        self.settings, self.group_id = settings, group_id
        self.writer = RetryingWriter(make_writer(settings.influx))
        self.written = 0
        self.invalid = 0

    async def run(self) -> None:
        """Consume until cancelled."""
        options = self.settings.kafka.client_options()
        await ensure_topic(self.settings)
        consumer = AIOKafkaConsumer(
            self.settings.topics.producer_stats, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
            **options)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                reports = [parse_stats(r.value) for rs in batches.values() for r in rs]
                lines = [s.line() for s in reports if s is not None]
                self.invalid += sum(s is None for s in reports)
                if lines:
                    await self.writer.write(lines)
                    self.written += len(lines)
                if reports:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await self.writer.close()


async def ensure_topic(settings: ProcessorSettings) -> None:
    """Create the producer-stats topic where missing."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(settings.topics.producer_stats,
                                                settings.topics.partitions, 1)])
    finally:
        await admin.close()


