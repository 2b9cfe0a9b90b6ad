"""A worker that cannot go on ends with a non-zero exit and one clear log line, so that its
supervisor restarts it; it never stays up counting nothing."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from promptprof import KafkaSettings
from promptprof_processor.runtime.adapter import EXIT_FATAL
from promptprof_processor.runtime.checkpoint import Head
from promptprof_tools.stack import create_topics, run_sync

from .conftest import Pipeline, wait_until


async def _write_head(bootstrap: str, topic: str, head: Head) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, head.pack(), partition=0)
    finally:
        await producer.stop()


def test_a_checkpoint_that_cannot_be_read_ends_the_worker_with_one_log_line(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(widths_s=[2])
    heads = f"{pipeline.app_id}-checkpoint-heads"
    kafka = KafkaSettings(bootstrap_servers=pipeline.broker.bootstrap)
    run_sync(create_topics(kafka, [heads, f"{pipeline.app_id}-checkpoint-chunks"],
                           pipeline.topics.partitions))
    # a head whose chunks the log does not hold: starting over would count calls twice
    run_sync(_write_head(pipeline.broker.bootstrap, heads, Head(7, 3, 100, 0, 5)))
    worker = pipeline.start_worker()
    wait_until(lambda: not worker.alive(), 60, "the worker's exit", pipeline.logs)
    assert worker.popen is not None and worker.popen.returncode == EXIT_FATAL
    failures = [line for line in worker.log_tail(5000).splitlines()
                if "promptprof.worker_failed" in line]
    assert len(failures) == 1, worker.log_tail()
    assert "restoring assigned partitions" in failures[0] and "CheckpointError" in failures[0]
