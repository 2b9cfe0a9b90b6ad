"""A private Tansu broker restarted under traffic (memory storage: every topic, offset, group
and changelog is lost, and offsets start from 0 again): the workers keep running, and every call
the new broker holds is counted exactly once.

Calls the old broker had acknowledged but no checkpoint covered yet are lost with it: that is
the documented policy of a memory-only broker (see chaos/run.py's broker_restart phase), so the
calls from before the restart are only bounded (never counted twice) and the loss is printed.
The new broker, just after its restart, now and then acknowledges a few records that never
appear in its log (their offsets are missing from it): the test reads the log, checks the counts
against what it holds and prints what it lacks."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from processor_integration.conftest import NS, PARTITIONS, Pipeline, Traffic, wait_until

from promptprof import KafkaSettings
from promptprof._envelope import decode_record
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_tools.stack import InfluxDB, TansuBroker, create_topics, run_sync

pytestmark = pytest.mark.integration

WIDTH = 2
# prompt ids are the partition keys: enough of them that the calls after the restart land on
# partitions that held records before it (whose offsets then start again below the old ones)
PROMPTS = 8
BEFORE = "before"
AFTER = "after"
# long enough for the workers to see the broker gone (failed fetches, commits, heartbeats)
DOWN_S = 3.0


def _windows_of(traffic: Traffic, phase: str) -> dict[tuple[str, int], int]:
    """Calls sent per (prompt id, window start) for the prompts of one phase."""
    return {key: len(calls) for key, calls in traffic.windows(WIDTH).items()
            if key[0].startswith(phase)}


def _counted_of(pipeline: Pipeline, phase: str) -> dict[tuple[str, int], float]:
    """Calls counted per (prompt id, window start) for the prompts of one phase."""
    return {key: point["calls"] for key, point in pipeline.points(WIDTH).items()
            if key[0].startswith(phase)}


def _in_log(pipeline: Pipeline, phase: str) -> dict[tuple[str, int], int]:
    """Calls per (prompt id, window start) for the prompts of one phase, as the broker's calls
    log holds them."""
    width = WIDTH * NS
    held: Counter[tuple[str, int]] = Counter()
    for value, _ in pipeline.read_topic(pipeline.topics.calls, expected=10**9, timeout_s=10.0):
        for call in decode_record(value or b""):
            prompt = call["promptprof.prompt.id"]
            if prompt.startswith(phase):
                start = call["start_time_unix_nano"]
                held[(prompt, start - start % width)] += 1
    return dict(held)


def _total(pipeline: Pipeline, phase: str) -> float:
    return sum(n for prompt, n in pipeline.calls_by_prompt(WIDTH).items()
               if prompt.startswith(phase))


@pytest.mark.xfail(
    strict=False,
    reason="known gap (#7), Tansu's: in about 1 run of 4, just after the restart, a "
    "partition's first records cannot be fetched from their offset, and their windows stay a "
    "few calls short; chaos/tansu_restart_probe.py shows Tansu serving offsets twice or not at "
    "all after a restart, with no promptprof code involved",
)
def test_every_call_after_a_broker_restart_counts_once(
    kafka_broker_factory: Callable[[], TansuBroker], influxdb: InfluxDB,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    broker = kafka_broker_factory()
    topics = ProcessorTopicSettings(
        calls=unique_name("calls"), dead_letter=unique_name("dlq"),
        windows=unique_name("windows"), alerts=unique_name("alerts"), partitions=PARTITIONS,
    )
    names = [topics.calls, topics.dead_letter, topics.windows, topics.alerts]

    def make_topics() -> None:
        run_sync(create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), names,
                               PARTITIONS))

    make_topics()
    database = unique_name("db").replace("-", "_")
    influxdb.create_database(database)
    pipeline = Pipeline(broker=broker, influx=influxdb, database=database, topics=topics,
                        app_id=unique_name("app"), tmp=tmp_path / "pipeline", widths_s=[WIDTH])
    pipeline.tmp.mkdir()
    phase = [BEFORE]
    try:
        workers = [pipeline.start_worker(f"worker-{i}") for i in range(2)]
        traffic = pipeline.traffic()
        thread, stop = traffic.run_in_thread(
            90.0, 320, lambda i: (f"{phase[0]}-{i % PROMPTS}", 30.0, None))
        try:
            wait_until(lambda: _total(pipeline, BEFORE) >= 1500, 60,
                       "windows before the restart", pipeline.logs)
            broker.stop()
            acked = traffic.profiler.stats()["sent_events"]  # by the broker that is gone
            time.sleep(DOWN_S)
            broker.restart()
            make_topics()
            phase[0] = AFTER  # every call from here on is produced to the new broker
            wait_until(lambda: _total(pipeline, AFTER) >= 3000, 90,
                       "windows after the restart", pipeline.logs)
        finally:
            stop.set()
            thread.join()
        traffic.flush()
        sent = _windows_of(traffic, AFTER)
        held = _in_log(pipeline, AFTER)

        def complete() -> bool:
            counted = _counted_of(pipeline, AFTER)
            return all(counted.get(start, 0) >= n for start, n in held.items())

        def explain() -> str:
            counted = _counted_of(pipeline, AFTER)
            short = {s: (n, counted.get(s, 0)) for s, n in held.items() if counted.get(s) != n}
            return f"{len(short)} windows wrong (in log, counted): {short}\n" + pipeline.logs()

        wait_until(complete, 90, "every window after the restart", explain)
        assert _counted_of(pipeline, AFTER) == held, explain()
        before_sent = sum(_windows_of(traffic, BEFORE).values())
        before_counted = _total(pipeline, BEFORE)
        assert before_counted <= before_sent
        print(f"broker restart: before {before_sent} sent ({acked} acked by the old broker), "
              f"{before_counted:.0f} counted, {before_sent - before_counted:.0f} lost with it; "
              f"after {sum(sent.values())} sent, {sum(held.values())} in the new "
              f"broker's log, all of those counted once")
        assert all(n <= sent.get(key, 0) for key, n in held.items())
        assert all(w.alive() for w in workers), pipeline.logs()
    finally:
        pipeline.close()
