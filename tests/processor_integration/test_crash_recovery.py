"""A worker interrupted mid-stream and restarted with the same app id: no window missing, and
in every window no call lost and none counted twice.

Why none twice: a partition's checkpoint holds its open windows and the offset of the next record
they do not include, committed together by one head record; the restarted worker restores both
and skips every record before that offset, wherever its consumer starts fetching. A SIGKILL
re-sends the windows closed since the last checkpoint, and a re-sent window overwrites its own
point with the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from processor_integration.conftest import NS, Pipeline, WorkerProcess, wait_until
from promptprof_tools.tally import Tally

pytestmark = pytest.mark.integration

SERIES = ("one", "two", "three", "four")
WIDTH = 2
RATE = 400
CHECKPOINT_S = 1.0


@dataclass
class Outcome:
    tally: Tally
    resumed_s: float


def _interrupt_and_restart(
    pipeline: Pipeline, interrupt: Callable[[WorkerProcess], None]
) -> Outcome:
    """Traffic in; once windows flow, ``interrupt`` the worker and start it again (same app id,
    same data dir); more traffic; then every window, and the calls counted."""
    worker = pipeline.start_worker()
    with pipeline.steady_traffic(
        RATE, lambda i: (SERIES[i % len(SERIES)], 20.0 + i % 100, None)
    ) as traffic:
        # mid-stream: the worker has written windows and keeps receiving calls
        wait_until(lambda: sum(pipeline.calls_by_prompt(WIDTH).values()) >= 4 * RATE, 60,
                   "windows of the first worker", pipeline.logs)
        interrupt(worker)
        interrupted_ns = time.time_ns()
        worker.start()

        def resumed() -> bool:
            return any(start > interrupted_ns for _, start in pipeline.points(WIDTH))

        wait_until(resumed, 90, "a window after the restart", pipeline.logs)
        resumed_s = (time.time_ns() - interrupted_ns) / NS
        # a little more traffic once the new worker runs, then the producer stops
        sent_then = len(traffic.sent)
        wait_until(lambda: len(traffic.sent) >= sent_then + 2 * RATE, 10, "more traffic")
    tally = pipeline.tally(traffic, WIDTH)
    assert worker.alive(), worker.log_tail()
    assert worker.stop() < 10
    return Outcome(tally, resumed_s)


def test_sigkill_loses_no_call_and_counts_none_twice(
    pipeline_factory: Callable[..., Pipeline], record_property: Callable[[str, object], None],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH], checkpoint_interval_s=CHECKPOINT_S)
    outcome = _interrupt_and_restart(pipeline, WorkerProcess.kill)
    tally = outcome.tally
    print(
        f"\nSIGKILL mid-stream: {tally.sent} calls sent at {tally.rate:.0f}/s, "
        f"{tally.counted:.0f} counted, per window {tally.lost:.0f} lost and "
        f"{tally.duplicated:.0f} counted twice; windows resumed {outcome.resumed_s:.1f} s "
        f"after the kill"
    )
    record_property("sigkill_duplicated", tally.duplicated)
    record_property("sigkill_recovery_s", round(outcome.resumed_s, 1))
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_sigterm_mid_stream_stops_promptly_and_counts_nothing_twice(
    pipeline_factory: Callable[..., Pipeline], record_property: Callable[[str, object], None],
) -> None:
    pipeline = pipeline_factory(widths_s=[WIDTH], checkpoint_interval_s=CHECKPOINT_S)
    stop_s: list[float] = []

    def stop(worker: WorkerProcess) -> None:
        stop_s.append(worker.stop())
        # Left, not waiting out its session: the restarted worker must not join a group that
        # still lists the dead member (it did in generation 0 on Tansu, see app.py).
        assert pipeline.group_members()[1] == []

    outcome = _interrupt_and_restart(pipeline, stop)
    print(
        f"\nSIGTERM mid-stream: stopped in {stop_s[0]:.1f} s; {outcome.tally.sent} calls sent, "
        f"per window {outcome.tally.lost:.0f} lost and {outcome.tally.duplicated:.0f} counted "
        f"twice; windows resumed "
        f"{outcome.resumed_s:.1f} s after the stop"
    )
    record_property("sigterm_stop_s", round(stop_s[0], 1))
    record_property("sigterm_duplicated", outcome.tally.duplicated)
    # stopping waits for the last checkpoint (at most one interval), not for new records
    assert stop_s[0] < 2 * CHECKPOINT_S + 3
    assert (outcome.tally.lost, outcome.tally.duplicated) == (0, 0)
