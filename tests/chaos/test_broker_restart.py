"""A private durable Tansu broker (S3 engine on localbucket) restarted under traffic: the
workers keep running, no call sent before, during or after the restart is lost, and every
window holds exactly the calls the broker's log holds in it.

The log itself may hold a few calls twice: a record batch the broker stored but could not ack
before it stopped is sent again by the producer (at-least-once delivery; Tansu refuses
idempotent producers). The test requires every call counted twice to be such a call, i.e. the
surplus of each window over what was sent equals the surplus of the log over it, and prints it.

The broker and its storage server (localbucket, with If-Match honoured: see
promptprof_tools.stack.localbucket) are both stopped and started again; the producer holds what it
records meanwhile and sends it once the broker is back. With the memory broker this test cannot
hold: the restart loses what the broker held (see the README)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from processor_integration.conftest import NS, Pipeline, Traffic, wait_until

from promptprof._envelope import decode_record
from promptprof_tools.stack import TansuBroker
from promptprof_tools.tally import tally_windows
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
# A partition without records for idle_timeout_s closes its open windows by the wall clock: with
# the 1 s of the other tests, the windows open when the broker went away closed during the
# outage, and the calls the producer held for them arrived late (dropped, in late_events).
IDLE_S = 30.0
# The calls the producer held during the outage reach the workers when the broker is back, some
# of them after newer calls of their partition: with 1 s of allowed lateness their windows had
# closed, and they were dropped as late (late_events; 86 calls in one run, the exact shortfall).
# A deployment whose broker restarts sets the lateness above its restart time.
LATENESS_S = 15.0
STOP_S = 90.0


def _counted(pipeline: Pipeline) -> float:
    return sum(pipeline.calls_by_prompt(WIDTH).values())


def _counted_windows(pipeline: Pipeline) -> dict[tuple[str, int], float]:
    return {key: point["calls"] for key, point in pipeline.points(WIDTH).items()}


def traffic_windows(traffic: Traffic) -> dict[tuple[str, int], int]:
    """Calls sent per (prompt id, window start)."""
    return {key: len(calls) for key, calls in traffic.windows(WIDTH).items()}


def _in_log(pipeline: Pipeline) -> dict[tuple[str, int], int]:
    """Calls per (prompt id, window start) in the broker's calls log, read to its end (the
    reader stops at its deadline: the S3 engine serves one batch per fetch)."""
    width = WIDTH * NS
    held: Counter[tuple[str, int]] = Counter()
    for value, _ in pipeline.read_topic(pipeline.topics.calls, expected=10**9, timeout_s=30):
        for call in decode_record(value or b""):
            start = call["start_time_unix_nano"]
            held[(call["promptprof.prompt.id"], start - start % width)] += 1
    return dict(held)


def test_every_call_through_a_broker_restart_counts_once(
    kafka_broker_factory: BrokerFactory, pipeline_factory: Callable[..., Pipeline],
) -> None:
    broker: TansuBroker = kafka_broker_factory(durable=True)
    pipeline = pipeline_factory(widths_s=[WIDTH], broker=broker, idle_timeout_s=IDLE_S,
                                allowed_lateness_s=LATENESS_S)
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
    in_log = _in_log(pipeline)
    resent = tally_windows(traffic_windows(traffic), in_log)
    print(f"the log holds {resent.duplicated:.0f} calls twice (batches resent by the producer)")
    assert tally.lost == 0 and resent.lost == 0
    assert tally_windows(in_log, _counted_windows(pipeline)).exact
    assert tally.duplicated == resent.duplicated
    late = sum(point["late_events"] or 0 for point in pipeline.points(WIDTH).values())
    assert late == 0
    assert all(w.alive() for w in workers), pipeline.logs()
    # a worker leaving its group writes the group's state through the S3 engine: slower than
    # on the memory broker, hence the longer bound than Pipeline.close's
    stop_s = [worker.stop(timeout_s=STOP_S) for worker in workers]
    print(f"workers stopped in {', '.join(f'{s:.1f}' for s in stop_s)} s")
