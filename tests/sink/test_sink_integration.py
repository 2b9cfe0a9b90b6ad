"""The sink through the real broker into the real InfluxDB: one window of a poll that InfluxDB
refuses (older than the database's retention) is dead-lettered once with InfluxDB's reason; every
other window is written; a restarted sink sends no dead letter again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from promptprof_processor.settings import ProcessorSettings, ProcessorTopicSettings
from promptprof_processor.sink.consumer import WindowSink
from promptprof_processor.sink.lineprotocol import WINDOW_MEASUREMENT
from promptprof_tools.stack import InfluxDB
from tests.processor.factories import T0_S

from .fakes import window

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"not before the deadline: {what}"
        await asyncio.sleep(0.05)


async def send(settings: ProcessorSettings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.topics.windows, value)
    finally:
        await producer.stop()


async def read_to_end(
    settings: ProcessorSettings, topic: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, read up to each partition's high watermark."""
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", group_id=None,
                                **settings.kafka.client_options())
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []

    async def at_end() -> bool:
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            records.extend(batch)
        parts = consumer.assignment()
        ends = [(consumer.highwater(tp), await consumer.position(tp)) for tp in parts]
        return bool(parts) and all(end is not None and pos >= end for end, pos in ends)

    try:
        await until(at_end, f"the end of {topic}")
    finally:
        await consumer.stop()
    return records


async def run_sink_until(
    settings: ProcessorSettings, group_id: str, condition: Callable[[], Awaitable[bool]], what: str
) -> WindowSink:
    sink, stop = WindowSink(settings, group_id), asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        await until(condition, what)
    finally:
        stop.set()
        await task
    return sink


async def test_a_refused_window_is_dead_lettered_once_and_the_rest_is_written(
    influxdb: InfluxDB, fresh_topics: ProcessorTopicSettings,
    settings_for: Callable[..., ProcessorSettings], unique_name: Callable[[str], str],
) -> None:
    database = unique_name("db").replace("-", "_")
    influxdb.query(f'CREATE DATABASE "{database}" WITH DURATION 1h')
    settings = settings_for(topics=fresh_topics, database=database)
    recent_s = (int(time.time()) - T0_S - 600) // 10 * 10  # ten minutes ago: kept
    good = [window(f"p{i}", start_s=recent_s) for i in range(40)]
    too_old = window("p-old", start_s=0)  # 2023: beyond the retention, refused by InfluxDB
    values = [w.to_bytes() for w in good[:20]] + [too_old.to_bytes(), b"{not a window"]
    values += [w.to_bytes() for w in good[20:]]
    await send(settings, values)

    def written() -> int:
        return len(influxdb.rows(f'SELECT "events" FROM "{WINDOW_MEASUREMENT}"', database))

    async def all_written(count: int = len(good)) -> bool:
        return written() == count

    group = unique_name("sink")
    first = await run_sink_until(settings, group, all_written, "every good window written")
    dead = await read_to_end(settings, fresh_topics.dead_letter)
    assert first.dead_letters == {"influxdb_refused": 1, "not_a_window": 1}
    assert first.windows_written == len(good)
    by_value = {r.value: dict(r.headers) for r in dead}
    assert len(dead) == len(by_value) == 2
    assert by_value[b"{not a window"]["reason"].startswith(b"not a window:")
    reason = by_value[too_old.to_bytes()]["reason"].decode()
    assert reason == "influxdb refused a point: partial write: points beyond retention policy " \
        "dropped=1"
    assert {h["stage"] for h in by_value.values()} == {b"sink"}

    # a restarted sink of the same group goes on after the committed poll: no dead letter again
    latest = window("p-latest", start_s=recent_s)
    await send(settings, [latest.to_bytes()])
    second = await run_sink_until(
        settings, group, lambda: all_written(len(good) + 1), "the next window written"
    )
    assert second.dead_letters == {} and second.windows_written == 1
    assert len(await read_to_end(settings, fresh_topics.dead_letter)) == 2
