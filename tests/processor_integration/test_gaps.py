"""The worker reads a range Faust skipped with a consumer of its own: exactly the records of
the range, in order, from the real broker."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from promptprof.config import TopicSettings
from promptprof.stack import TansuBroker
from promptprof_processor.runtime.gaps import GapNotRead, read_gap

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, b"%d" % i, partition=2)  # batched: several per request
        await producer.flush()
    finally:
        await producer.stop()


async def test_a_gap_is_read_whole_and_in_order(
    kafka_broker: TansuBroker, fresh_topics: TopicSettings
) -> None:
    await _produce(kafka_broker.bootstrap, fresh_topics.calls, 60)
    options = {"bootstrap_servers": kafka_broker.bootstrap}
    gap = await read_gap(options, fresh_topics.calls, 2, 17, 45)
    assert gap.complete
    assert gap.records == [(o, b"%d" % o) for o in range(17, 45)]


async def test_a_range_beyond_the_end_of_the_log_is_read_as_far_as_the_log_goes(
    kafka_broker: TansuBroker, fresh_topics: TopicSettings
) -> None:
    # the record that showed the gap came from a log the broker lost since (a restart)
    await _produce(kafka_broker.bootstrap, fresh_topics.calls, 5)
    options = {"bootstrap_servers": kafka_broker.bootstrap}
    gap = await read_gap(options, fresh_topics.calls, 2, 2, 900, timeout_s=10.0)
    assert gap.records == [(o, b"%d" % o) for o in range(2, 5)] and not gap.complete


async def test_an_unreachable_broker_is_an_error_not_a_wait(
    fresh_topics: TopicSettings,
) -> None:
    options = {"bootstrap_servers": "127.0.0.1:9", "request_timeout_ms": 1000}
    with pytest.raises((GapNotRead, KafkaError)):
        await read_gap(options, fresh_topics.calls, 2, 0, 9, timeout_s=2.0)
