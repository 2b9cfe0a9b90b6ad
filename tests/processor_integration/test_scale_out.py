"""Two workers in one consumer group split the 4 partitions and produce the same aggregates as
one worker would: the second joins mid-stream, so the partitions it takes over are handed over
through a rebalance (checkpoint, ack, commit on the old owner; restore on the new one)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from processor_integration.conftest import NS, Pipeline, wait_until

pytestmark = pytest.mark.integration

SERIES = tuple(f"s{i}" for i in range(8))
WIDTH = 2
RATE = 400
CHECKPOINT_S = 1.0


def test_a_second_worker_takes_over_half_the_partitions(
    pipeline_factory: Callable[..., Pipeline], record_property: Callable[[str, object], None],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH], checkpoint_interval_s=CHECKPOINT_S)
    first = pipeline.start_worker("worker-a")
    with pipeline.steady_traffic(
        RATE, lambda i: (SERIES[i % len(SERIES)], 30.0 + i % 70, None)
    ) as traffic:
        wait_until(lambda: pipeline.calls_by_prompt(WIDTH), 60, "windows of the first worker",
                   pipeline.logs)
        second = pipeline.start_worker("worker-b")  # web is off by default: no port clash

        def two_members() -> bool:
            state, members = pipeline.group_members()
            return state == "Stable" and len(members) == 2

        wait_until(two_members, 60, "a stable group of two", pipeline.logs)
        joined_ns = time.time_ns()
        # both workers run for two more windows, then the producer stops
        wait_until(lambda: time.time_ns() > joined_ns + 2 * WIDTH * NS, 10, "two windows")
    tally = pipeline.tally(traffic, WIDTH)
    record_property("scale_out_duplicated", tally.duplicated)
    print(f"\nsecond worker joined mid-stream: {tally.sent} calls sent, per window "
          f"{tally.lost:.0f} lost and {tally.duplicated:.0f} counted twice")
    assert (tally.lost, tally.duplicated) == (0, 0)

    for worker in (first, second):
        assert worker.alive(), worker.log_tail()
    for worker in (first, second):
        assert worker.stop() < 10
