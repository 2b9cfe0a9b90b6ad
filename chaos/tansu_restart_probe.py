"""Does a Tansu broker serve a consistent log after a restart? No promptprof code involved.

A keyed producer and a group consumer run against a private Tansu (memory storage); the broker
is stopped, started again on the same port, the topic created again, and the producer goes on.
Then each partition is read from offset 0 by a fresh consumer and compared with its end offset.
Without the restart every offset is read once; with it, runs here served 232 offsets twice (860
records for 628 offsets) or left 236 of 868 offsets unreadable: the inconsistency behind the
broker-restart gap in the README.

    .venv/bin/python chaos/tansu_restart_probe.py [trials] [--no-restart]

Prints one JSON line per trial.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from promptprof import KafkaSettings
from promptprof_tools.stack import TansuBroker, create_topics
from promptprof_tools.stack.ports import free_port

TOPIC = "probe"
PARTITIONS = 4


async def _produce(bootstrap: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4",
                                linger_ms=5, acks=1)
    await producer.start()
    n = 0
    try:
        while not stop.is_set():
            for key in range(8):
                with contextlib.suppress(Exception):  # the broker is away for a while
                    delivery = await producer.send(TOPIC, b"v%d" % n, key=b"k%d" % key)
                    delivery.add_done_callback(lambda f: f.exception())  # failures expected
                n += 1
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id="probe",
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        while not stop.is_set():
            try:
                await consumer.getmany(timeout_ms=200)
            except Exception:  # the broker is away for a while
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def _read_partition(bootstrap: str, partition: int) -> dict[str, int]:
    tp = TopicPartition(TOPIC, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        offsets: list[int] = []
        for _ in range(6):
            batch = await consumer.getmany(tp, timeout_ms=300)
            offsets.extend(record.offset for record in batch.get(tp, []))
        served = consumer.highwater(tp) or 0
    finally:
        await consumer.stop()
    distinct = set(offsets)
    return {"end": end, "high_watermark": served, "read": len(offsets),
            "read_twice": len(offsets) - len(distinct),
            "unreadable": sum(1 for o in range(served) if o not in distinct)}


async def trial(restart: bool) -> dict[str, object]:
    """One run: traffic, (restart), more traffic, then every partition read from 0."""
    broker = TansuBroker(free_port(), Path(tempfile.mkdtemp()))
    broker.start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    try:
        await create_topics(kafka, [TOPIC], PARTITIONS)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_produce(broker.bootstrap, stop)),
                 asyncio.create_task(_consume(broker.bootstrap, stop))]
        await asyncio.sleep(4)
        if restart:
            broker.stop()
        await asyncio.sleep(3)
        if restart:
            broker.restart()
            await create_topics(kafka, [TOPIC], PARTITIONS)
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        partitions = {str(p): await _read_partition(broker.bootstrap, p)
                      for p in range(PARTITIONS)}
    finally:
        broker.stop()
    consistent = all(not p["read_twice"] and not p["unreadable"] for p in partitions.values())
    return {"restart": restart, "consistent": consistent, "partitions": partitions}


def main() -> None:
    """Run the trials given on the command line."""
    trials = int(next((a for a in sys.argv[1:] if a.isdigit()), "3"))
    restart = "--no-restart" not in sys.argv
    for _ in range(trials):
        print(orjson.dumps(asyncio.run(trial(restart))).decode(), flush=True)


if __name__ == "__main__":
    main()
