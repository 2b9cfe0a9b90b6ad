"""A private durable Tansu broker (S3 engine on localbucket) restarted under traffic: the
workers keep running, and every call sent before, during and after the restart is counted
exactly once, window by window (0 lost, 0 counted twice in each window).

The broker and its storage server (localbucket, with If-Match honoured: see
promptprof.stack.localbucket) are both stopped and started again; the producer holds what it
records meanwhile and sends it once the broker is back. With the memory broker this test cannot
hold: the restart loses what the broker held (see the README)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from processor_integration.conftest import Pipeline, wait_until

from promptprof.stack import TansuBroker
from tests.conftest import BrokerFactory

pytestmark = pytest.mark.integration

WIDTH = 2
PROMPTS = 8  # the partition keys: every partition holds records before and after the restart
RATE = 320
# long enough for the workers to see the broker gone (failed fetches, commits, heartbeats)
DOWN_S = 3.0
# Tansu's S3 engine keeps a record batch per object and lists the partition's folder on each
# fetch, serving one batch: fewer, larger batches keep the workers' fetches ahead
LINGER_MS = 500
STOP_S = 60.0


def _counted(pipeline: Pipeline) -> float:
    return sum(pipeline.calls_by_prompt(WIDTH).values())


def test_every_call_through_a_broker_restart_counts_once(
    kafka_broker_factory: BrokerFactory, pipeline_factory: Callable[..., Pipeline],
) -> None:
    broker: TansuBroker = kafka_broker_factory(durable=True)
    pipeline = pipeline_factory(widths_s=[WIDTH], broker=broker)
    workers = [pipeline.start_worker(f"worker-{i}") for i in range(2)]
    calls = pipeline.steady_traffic(RATE, lambda i: (f"p-{i % PROMPTS}", 30.0, None),
                                    linger_ms=LINGER_MS)
    with calls as traffic:
        wait_until(lambda: _counted(pipeline) >= 1500, 60, "windows before the restart",
                   pipeline.logs)
        broker.stop()  # the broker, then its storage server
        held = traffic.profiler.stats()["sent_events"]
        time.sleep(DOWN_S)
        broker.start()
        wait_until(lambda: _counted(pipeline) >= held + 1500, 120,
                   "windows after the restart", pipeline.logs)
    tally = pipeline.tally(traffic, WIDTH, timeout_s=120)
    print(f"\nbroker restart (durable): {tally.sent} calls sent ({held} acked before the "
          f"restart), per window {tally.lost:.0f} lost and {tally.duplicated:.0f} counted "
          f"twice in {tally.windows} windows")
    assert (tally.lost, tally.duplicated) == (0, 0)
    assert all(w.alive() for w in workers), pipeline.logs()
    # a worker leaving its group writes the group's state through the S3 engine: slower than
    # on the memory broker, hence the longer bound than Pipeline.close's
    stop_s = [worker.stop(timeout_s=STOP_S) for worker in workers]
    print(f"workers stopped in {', '.join(f'{s:.1f}' for s in stop_s)} s")
