"""InfluxDB stopped for several windows and started again: every window arrives afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from processor_integration.conftest import NS, Pipeline, wait_until
from promptprof_tools.stack import InfluxDB

pytestmark = pytest.mark.integration

SERIES = ("north", "south", "east")
WIDTH = 2
OUTAGE_S = 4 * WIDTH


def test_windows_closed_during_an_influxdb_outage_arrive_after_it(
    pipeline_factory: Callable[..., Pipeline], influxdb_factory: Callable[[], InfluxDB],
    record_property: Callable[[str, object], None],
) -> None:
    influx = influxdb_factory()
    pipeline = pipeline_factory(widths_s=[WIDTH], influx=influx)
    worker = pipeline.start_worker()
    traffic = pipeline.traffic()
    thread, stop = traffic.run_in_thread(
        120.0, 300, lambda i: (SERIES[i % len(SERIES)], 40.0 + i % 50, None)
    )
    try:
        wait_until(lambda: pipeline.calls_by_prompt(WIDTH), 60, "the first windows",
                   pipeline.logs)
        influx.stop()
        down_ns = time.time_ns()
        time.sleep(OUTAGE_S)  # the outage itself: the worker closes windows, the sink retries
        influx.start(timeout_s=60)
        up_ns = time.time_ns()
        closed_while_down = {
            start for _, start in traffic.windows(WIDTH)
            if start >= down_ns and start + WIDTH * NS <= up_ns
        }
        assert len(closed_while_down) >= 3, "the outage did not span three whole windows"
        expected = {(series, start) for series in SERIES for start in closed_while_down}
        wait_until(lambda: expected <= set(pipeline.points(WIDTH)), 60,
                   "the windows closed during the outage", pipeline.logs)
        caught_up_s = (time.time_ns() - up_ns) / NS
        # one more window of traffic after the restart, then the producer stops
        wait_until(lambda: time.time_ns() > up_ns + WIDTH * NS, 10, "one more window")
    finally:
        stop.set()
        thread.join()
    traffic.flush()

    points = pipeline.wait_for_windows(traffic, WIDTH, timeout_s=60)
    sent = traffic.count_by_prompt()
    assert pipeline.calls_by_prompt(WIDTH) == {p: float(n) for p, n in sent.items()}
    assert set(points) == set(traffic.windows(WIDTH))

    print(f"\ninfluxdb outage {OUTAGE_S} s ({len(closed_while_down)} windows closed meanwhile):"
          f" all of them written {caught_up_s:.1f} s after its restart")
    record_property("influx_outage_s", OUTAGE_S)
    record_property("caught_up_after_restart_s", round(caught_up_s, 1))
    assert worker.alive(), worker.log_tail()
