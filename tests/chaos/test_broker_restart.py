"""A private Tansu broker restarted under traffic (memory storage: every topic, offset and
changelog is lost): the workers keep running and count again once the topics are back; what is
lost is reported (printed), not bounded: see chaos/run.py's broker_restart phase."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from processor_integration.conftest import PARTITIONS, Pipeline, wait_until

from promptprof.config import KafkaSettings, TopicSettings
from promptprof.stack import InfluxDB, TansuBroker, create_topics, run_sync

pytestmark = pytest.mark.integration

WIDTH = 2


def test_workers_survive_a_broker_that_lost_its_data(
    kafka_broker_factory: Callable[[], TansuBroker], influxdb: InfluxDB,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    broker = kafka_broker_factory()
    topics = TopicSettings(
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
    try:
        workers = [pipeline.start_worker(f"worker-{i}") for i in range(2)]
        traffic = pipeline.traffic()
        thread, stop = traffic.run_in_thread(60.0, 300, lambda i: ("steady", 30.0, None))
        try:
            wait_until(lambda: sum(pipeline.calls_by_prompt(WIDTH).values()) >= 600, 60,
                       "windows before the restart", pipeline.logs)
            broker.stop()
            acked = traffic.profiler.stats()["sent_events"]  # by the broker that is gone
            broker.restart()
            make_topics()
            restarted_ns = time.time_ns()
            counted_then = sum(pipeline.calls_by_prompt(WIDTH).values())

            def resumed() -> bool:
                return any(start > restarted_ns + 3 * 10**9 for _, start in pipeline.points(WIDTH))

            wait_until(resumed, 60, "windows after the restart", pipeline.logs)
            time.sleep(3.0)
        finally:
            stop.set()
            thread.join()
        traffic.flush()
        sent = traffic.profiler.stats()["sent_events"]
        # every window of the calls sent after the restart is written, none counted twice
        wait_until(lambda: max((t for _, t in pipeline.points(WIDTH)), default=0)
                   >= traffic.sent[-1].time_ns - WIDTH * 10**9, 60, "the last window",
                   pipeline.logs)
        counted = sum(pipeline.calls_by_prompt(WIDTH).values())
        assert counted_then < counted <= sent, (counted_then, counted, sent)
        # Not asserted (see the report): the loss can exceed what the old broker had acked
        # and the workers had not counted (acked - counted_then).
        print(f"broker restart: sent {sent}, acked before {acked}, counted then "
              f"{counted_then}, counted {counted}, lost {sent - counted}")
        assert all(w.alive() for w in workers), pipeline.logs()
    finally:
        pipeline.close()
