"""Create promptprof's Kafka topics with aiokafka's admin client (idempotent)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from promptprof import KafkaSettings
from promptprof_processor.settings import ProcessorTopicSettings

log = structlog.get_logger(__name__)


def topic_names(topic_settings: ProcessorTopicSettings) -> list[str]:
    """The calls, dead-letter, windows and alerts topic names, in that order."""
    t = topic_settings
    return [t.calls, t.dead_letter, t.windows, t.alerts]


async def ensure_topics(
    kafka_settings: KafkaSettings,
    topic_settings: ProcessorTopicSettings,
    replication_factor: int = 1,
) -> dict[str, int]:
    """Create the calls, dead-letter, windows and alerts topics with the configured partitions.

    Topics that exist already are left as they are (a warning is logged when their partition
    count differs). Returns each topic's partition count as the broker reports it.
    """
    return await create_topics(
        kafka_settings,
        topic_names(topic_settings),
        topic_settings.partitions,
        replication_factor=replication_factor,
    )


async def create_topics(
    kafka_settings: KafkaSettings,
    names: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
) -> dict[str, int]:
    """Create ``names`` with ``partitions`` each unless they exist; return partition counts."""
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(**kafka_settings.client_options())
    await admin.start()
    try:
        new = [NewTopic(name, partitions, replication_factor) for name in wanted]
        response = await admin.create_topics(new)
        created = _created(response.topic_errors)
        counts = await _partition_counts(admin, wanted)
    finally:
        await admin.close()
    for name, count in counts.items():
        if name not in created and count != partitions:
            log.warning("kafka.topic_partitions_differ", topic=name, has=count, wanted=partitions)
    log.info("kafka.topics_ensured", created=sorted(created), partitions=counts)
    return counts


def _created(topic_errors: Iterable[Any]) -> set[str]:
    """Names created by this request; raises for any error but 'already exists'."""
    created: set[str] = set()
    for topic, code, *rest in topic_errors:
        if code == 0:
            created.add(str(topic))
        elif code != TopicAlreadyExistsError.errno:
            message = rest[0] if rest else None
            raise for_code(code)(f"creating topic {topic}: {message}")
    return created


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    return {str(t["topic"]): len(t["partitions"]) for t in described}
