"""A consumer whose position is past its log's end (the broker lost the log and started a new
one) is sought back to the start of the new log; one at the end is left where it is."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from promptprof_processor.lost_log import LostLogs
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_processor.sink.consumer import rewind_lost_logs
from promptprof_tools.stack import TansuBroker

pytestmark = pytest.mark.integration


async def test_a_position_past_the_end_goes_back_to_the_start(
    kafka_broker: TansuBroker, fresh_topics: ProcessorTopicSettings
) -> None:
    tp = TopicPartition(fresh_topics.windows, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=20)
    await producer.start()
    try:
        # one batch of five: Tansu's ListOffsets would say 1 here, the fetch says 5
        for i in range(5):
            await producer.send(tp.topic, b"%d" % i, partition=tp.partition)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        records = await consumer.getmany(tp, timeout_ms=3000)
        assert [r.offset for r in records[tp]] == [0, 1, 2, 3, 4]
        lost = LostLogs(grace_s=2.0)
        await rewind_lost_logs(lost, consumer, [tp], now=0.0)
        assert await consumer.position(tp) == 5  # at the end: nothing lost
        consumer.seek(tp, 300)  # where a consumer of the lost log stood
        assert await consumer.getmany(tp, timeout_ms=1000) == {}
        await rewind_lost_logs(lost, consumer, [tp], now=10.0)
        assert await consumer.position(tp) == 300  # not yet: a fetch may run a record behind
        await rewind_lost_logs(lost, consumer, [tp], now=12.0)
        assert await consumer.position(tp) == 0
    finally:
        await consumer.stop()
