"""Call events per second that one process delivers to Kafka (acked) through the producer.

promptprof: the main thread calls four ``@profile``-decorated no-ops (four series) ``events``
times in all, then ``profiler.flush()`` waits until the sender has every event acked by the
broker (acks=1); the time runs from the first call to the last ack. The sender was connected by
a warm-up beforehand. The buffer holds every event, so nothing is dropped; ``dropped`` is
reported and any shortfall is logged on stderr.

Baseline, same broker and topic: a bare aiokafka loop builds the same event dict (promptprof's
EventBuilder), serialises it with orjson and awaits ``send()`` once per event, then waits for
every delivery. Its producer has the sender's options (lz4, linger 5 ms, 1 MiB batches, acks=1).

Batching peer, the strongest a careful user would write with aiokafka alone: the same event dict,
orjson per event, one Kafka record per event, packed with aiokafka's own batching API
(``create_batch()``, ``append()`` until a batch is full, ``send_batch()`` to the event's
partition, the partition of each series key computed once), every batch awaited at the end; its
producer has the sender's options with a longer linger (20 ms) and 1 MiB batches (lz4, acks=1).

The three alternate for a few rounds; each figure is the median over rounds.
``ratio_vs_bare = events_per_s / bare_aiokafka_events_per_s``,
``ratio_vs_batching = events_per_s / batching_aiokafka_events_per_s``. CPU time per event is
reported too (``caller_cpu_us_per_event`` on the calling thread, ``sender_cpu_us_per_event`` on
the sender thread, ``bare_cpu_us_per_event`` and ``batching_cpu_us_per_event`` for the whole
process in the peers): it moves far less than wall time when other processes share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Any

import _common
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

import promptprof
from promptprof import load_settings
from promptprof._event import series_key
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder, register_spec
from promptprof._sender import producer_options

TOPIC = "llm.calls"
SERIES = 4


def noop() -> None:
    """The profiled function."""


def sender_cpu_s() -> float:
    """CPU seconds used so far by the promptprof sender thread (0 before it exists)."""
    for thread in threading.enumerate():
        if thread.name == "promptprof-sender" and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


def run_promptprof(profiler: promptprof.Profiler, events: int) -> dict[str, float]:
    """Call the profiled functions ``events`` times and wait until all were acked."""
    fns = [promptprof.profile(prompt_id=f"bench-{i}", version="1")(noop) for i in range(SERIES)]
    f0, f1, f2, f3 = fns
    before = profiler.stats()
    cpu0, sender0 = time.thread_time(), sender_cpu_s()
    t0 = time.perf_counter()
    for _ in range(events // SERIES):
        f0()
        f1()
        f2()
        f3()
    t_enqueued = time.perf_counter()
    flushed = profiler.flush(timeout=120.0)
    elapsed = time.perf_counter() - t0
    cpu, sender_cpu = time.thread_time() - cpu0, sender_cpu_s() - sender0
    after = profiler.stats()
    sent = after["sent_events"] - before.get("sent_events", 0)
    if not flushed or sent != events or after["dropped"]:
        _common.log("WARNING: not all sent", sent=sent, events=events, dropped=after["dropped"])
    return {
        "events_per_s": sent / elapsed,
        "enqueue_s": t_enqueued - t0,
        "caller_cpu_us": cpu / events * 1e6,
        "sender_cpu_us": sender_cpu / events * 1e6,
        "records": after["sent_records"] - before.get("sent_records", 0),
        "bytes": after["sent_bytes"] - before.get("sent_bytes", 0),
        "sent": sent,
    }


async def run_bare(bootstrap: str, events: int) -> dict[str, float]:
    """One ``await send()`` per orjson-serialised event; wait for every delivery."""
    settings = load_settings(kafka={"bootstrap_servers": bootstrap})
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        builder = EventBuilder("bench-service", "bench", False, None)
        specs = [register_spec(make_spec(f"bench-{i}", "1")) for i in range(SERIES)]
        await (await producer.send(TOPIC, b"{}"))  # warm-up: metadata and connection
        futures: list[asyncio.Future[Any]] = []
        size = 0
        perf_ns = time.perf_counter_ns
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(events):
            start = perf_ns()
            event = builder.build((specs[i % SERIES], start, perf_ns(), None, None, 1.0))
            value = orjson.dumps(event)
            size += len(value)
            futures.append(await producer.send(TOPIC, value, key=series_key(event)))
        await asyncio.gather(*futures)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await producer.stop()
    return {"events_per_s": events / elapsed, "bytes": size, "cpu_us": cpu / events * 1e6}


BATCHING_LINGER_MS = 20


async def run_batching(bootstrap: str, events: int) -> dict[str, float]:
    """orjson per event into ``create_batch()`` batches per partition; wait for every batch."""
    settings = load_settings(kafka={"bootstrap_servers": bootstrap})
    producer = AIOKafkaProducer(**{**producer_options(settings), "linger_ms": BATCHING_LINGER_MS})
    await producer.start()
    try:
        builder = EventBuilder("bench-service", "bench", False, None)
        specs = [register_spec(make_spec(f"bench-{i}", "1")) for i in range(SERIES)]
        await (await producer.send(TOPIC, b"{}"))  # warm-up: metadata and connection
        partitions = sorted(await producer.partitions_for(TOPIC))
        partition_of: dict[bytes, int] = {}
        batches: dict[int, BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        size = 0
        perf_ns = time.perf_counter_ns
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(events):
            start = perf_ns()
            event = builder.build((specs[i % SERIES], start, perf_ns(), None, None, 1.0))
            value, key = orjson.dumps(event), series_key(event)
            size += len(value)
            partition = partition_of.get(key)
            if partition is None:
                partition = partition_of[key] = DefaultPartitioner()(key, partitions, partitions)
            batch = batches.get(partition) or producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value) is None:  # full: send it
                futures.append(await producer.send_batch(batch, TOPIC, partition=partition))
                batch = producer.create_batch()
                batch.append(timestamp=None, key=key, value=value)
            batches[partition] = batch
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, TOPIC, partition=partition))
        await asyncio.gather(*futures)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await producer.stop()
    return {"events_per_s": events / elapsed, "bytes": size, "cpu_us": cpu / events * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, same method")
    args = parser.parse_args()
    _common.setup()
    events, rounds = (100_000, 2) if args.quick else (500_000, 3)

    with _common.broker([TOPIC]) as bootstrap:
        profiler = promptprof.configure(
            kafka={"bootstrap_servers": bootstrap},
            topics={"calls": TOPIC},
            producer={"buffer_size": events + 10_000, "metrics_log_interval_s": 0},
        )
        run_promptprof(profiler, 2_000)  # warm-up: connects the sender
        ours: list[dict[str, float]] = []
        bare: list[dict[str, float]] = []
        batching: list[dict[str, float]] = []
        for r in range(rounds):
            ours.append(run_promptprof(profiler, events))
            bare.append(asyncio.run(run_bare(bootstrap, events)))
            batching.append(asyncio.run(run_batching(bootstrap, events)))
            _common.log(
                "round",
                n=r + 1,
                promptprof=round(ours[-1]["events_per_s"]),
                bare=round(bare[-1]["events_per_s"]),
                batching=round(batching[-1]["events_per_s"]),
            )
        dropped = profiler.stats()["dropped"]
        promptprof.shutdown(5.0)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    eps, bare_eps = median(ours, "events_per_s"), median(bare, "events_per_s")
    batching_eps = median(batching, "events_per_s")
    _common.emit(
        "producer_throughput",
        {
            "events_per_s": eps,
            "bare_aiokafka_events_per_s": bare_eps,
            "ratio_vs_bare": eps / bare_eps,
            "batching_aiokafka_events_per_s": batching_eps,
            "ratio_vs_batching": eps / batching_eps,
            "batching_cpu_us_per_event": median(batching, "cpu_us"),
            "events": events,
            "rounds": rounds,
            "records": int(ours[-1]["records"]),
            "bytes_per_event": ours[-1]["bytes"] / events,
            "bare_bytes_per_event": bare[-1]["bytes"] / events,
            "enqueue_us_per_event": median(ours, "enqueue_s") / events * 1e6,
            "caller_cpu_us_per_event": median(ours, "caller_cpu_us"),
            "sender_cpu_us_per_event": median(ours, "sender_cpu_us"),
            "bare_cpu_us_per_event": median(bare, "cpu_us"),
            "sent_events": int(sum(run["sent"] for run in ours)),
            "dropped": dropped,
        },
    )


if __name__ == "__main__":
    main()
