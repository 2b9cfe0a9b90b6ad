"""A worker killed with SIGKILL mid-stream and restarted with the same app id: no window
missing, no call lost, and the calls counted twice bounded by the checkpoint interval.

Why the bound: the agent checkpoints a partition's open windows to the changelog every
``checkpoint_interval_s`` and only then acks the records the checkpoint covers; Faust commits
acked offsets every ``broker_commit_interval`` (the same interval), flushing the changelog first.
After a crash the new worker restores the last checkpoint that reached the changelog and re-reads
from the last committed offset, so what it counts twice is what was processed between the
checkpoint covered by the last commit and the last checkpoint: less than two intervals of calls.
The worker keeps up with the traffic (it processes envelopes far faster than the producer sends
them), so that is bounded by the calls *produced* in two intervals; the test allows one more
interval's worth for scheduling jitter on a loaded 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from processor_integration.conftest import NS, Pipeline, wait_until

pytestmark = pytest.mark.integration

SERIES = ("one", "two", "three", "four")
WIDTH = 2
RATE = 400
CHECKPOINT_S = 1.0


def test_sigkill_loses_no_call_and_counts_few_twice(
    pipeline_factory: Callable[..., Pipeline], record_property: Callable[[str, object], None],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH], checkpoint_interval_s=CHECKPOINT_S)
    first = pipeline.start_worker("worker-a")
    traffic = pipeline.traffic()
    thread, stop = traffic.run_in_thread(
        120.0, RATE, lambda i: (SERIES[i % len(SERIES)], 20.0 + i % 100, None)
    )
    try:
        # mid-stream: the worker has written windows and keeps receiving calls
        wait_until(lambda: sum(pipeline.calls_by_prompt(WIDTH).values()) >= 4 * RATE, 60,
                   "windows of the first worker", pipeline.logs)
        first.kill()
        killed_ns = time.time_ns()
        second = pipeline.start_worker("worker-b")

        def resumed() -> bool:
            return any(start > killed_ns for _, start in pipeline.points(WIDTH))

        wait_until(resumed, 90, "a window after the kill", pipeline.logs)
        recovered_s = (time.time_ns() - killed_ns) / NS
        # a little more traffic once the new worker runs, then the producer stops
        sent_then = len(traffic.sent)
        wait_until(lambda: len(traffic.sent) >= sent_then + 2 * RATE, 10, "more traffic")
    finally:
        stop.set()
        thread.join()
    traffic.flush()
    duration_s = (traffic.sent[-1].time_ns - traffic.sent[0].time_ns) / NS
    rate = len(traffic.sent) / duration_s

    points = pipeline.wait_for_windows(traffic, WIDTH, timeout_s=90)
    assert set(points) == set(traffic.windows(WIDTH))
    sent = traffic.count_by_prompt()
    counted = pipeline.calls_by_prompt(WIDTH)
    duplicates = sum(counted.values()) - sum(sent.values())
    bound = 3 * CHECKPOINT_S * rate
    print(
        f"\nSIGKILL mid-stream: {sum(sent.values())} calls sent at {rate:.0f}/s, "
        f"{sum(counted.values()):.0f} counted, {duplicates:.0f} counted twice "
        f"(bound {bound:.0f}); windows resumed {recovered_s:.1f} s after the kill"
    )
    record_property("sigkill_duplicates", duplicates)
    record_property("sigkill_recovery_s", round(recovered_s, 1))
    assert all(counted[p] >= n for p, n in sent.items()), (counted, sent)
    assert 0 <= duplicates <= bound
    assert second.alive(), second.log_tail()
    assert second.stop() < 10
