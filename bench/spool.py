"""The disk spool: how fast call events are spooled with Kafka down and replayed once it is back.

Set-up: a profiler whose broker address is a free loopback port where nothing listens yet, with
``spool_dir`` in a temporary folder, ``spool_after_s`` 0.5 (a failing cycle is spooled after half
a second), ``retry_backoff_max_ms`` 300 and a buffer that holds every call, so none is dropped.

1. Spooling: the main thread calls a ``@profile``-decorated no-op ``calls`` times;
   ``host_us_per_call`` is the loop's wall time over ``calls`` (what the host pays per call while
   Kafka is down). ``spooled_events_per_s`` is ``calls`` over the time from the first event
   written to the spool until every event is (``spooled_events``, polled every millisecond);
   ``spool_start_s`` is the time from the first call to the first spooled event (the
   ``spool_after_s`` wait).
2. Replay: a Tansu broker (memory storage) starts on that port and the calls topic is created;
   ``replayed_events_per_s`` is ``calls`` over the time from the first replayed event until every
   spooled event is replayed and acknowledged (``replayed_events``) and the spool is empty;
   ``replay_start_s`` is the time from the broker's start to the first replayed event (the
   sender's reconnect backoff). ``dropped`` must be 0.

Usage: ``.venv/bin/python bench/spool.py [--quick]``; one JSON line on stdout, logs on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

import promptprof
from promptprof import KafkaSettings
from promptprof_tools.stack.ports import free_port
from promptprof_tools.stack.tansu import TansuBroker
from promptprof_tools.stack.topics import create_topics

TOPIC = "llm.calls"
POLL_S = 0.001


def noop() -> None:
    """The profiled function."""


def wait_until(done: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``done`` every millisecond; the ``perf_counter`` time it first held.

    Raises :class:`TimeoutError` after ``timeout_s``.
    """
    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not done within {timeout_s} s")
        time.sleep(POLL_S)
    return time.perf_counter()


def spool_phase(profiler: promptprof.Profiler, calls: int, timeout_s: float) -> dict[str, float]:
    """Make ``calls`` calls with Kafka down and wait until all are spooled."""
    call = promptprof.profile(prompt_id="bench-spool", version="1", profiler=profiler)(noop)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    called = time.perf_counter()
    first = wait_until(lambda: profiler.stats()["spooled_events"] > 0, timeout_s)
    spooled = wait_until(lambda: profiler.stats()["spooled_events"] >= calls, timeout_s)
    return {
        "host_us_per_call": (called - started) / calls * 1e6,
        "spooled_events_per_s": calls / (spooled - first),
        "spool_start_s": first - started,
    }


def replay_phase(
    profiler: promptprof.Profiler, port: int, folder: Path, calls: int, timeout_s: float
) -> tuple[TansuBroker, dict[str, float]]:
    """Start the broker on ``port`` and wait until every spooled event is replayed."""
    broker = TansuBroker(port, folder)
    broker.start(timeout_s=30.0)
    asyncio.run(create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), [TOPIC], 4))
    up = time.perf_counter()
    first = wait_until(lambda: profiler.stats()["replayed_events"] > 0, timeout_s)

    def replayed() -> bool:
        stats = profiler.stats()
        return bool(stats["replayed_events"] >= calls and stats["spool_events"] == 0)

    done = wait_until(replayed, timeout_s)
    return broker, {
        "replayed_events_per_s": calls / (done - first),
        "replay_start_s": first - up,
    }


def run(calls: int, timeout_s: float) -> dict[str, Any]:
    """Both phases; the figures."""
    with tempfile.TemporaryDirectory(prefix="promptprof-bench-spool-") as tmp:
        port = free_port()
        profiler = promptprof.Profiler(
            promptprof.load_settings(
                kafka={"bootstrap_servers": f"127.0.0.1:{port}", "request_timeout_ms": 2000},
                topics={"calls": TOPIC},
                producer={
                    "buffer_size": calls + 10_000,
                    "metrics_log_interval_s": 0,
                    "retry_backoff_max_ms": 300,
                    "spool_dir": str(Path(tmp) / "spool"),
                    "spool_after_s": 0.5,
                    "spool_max_bytes": 1 << 30,
                },
            )
        )
        figures: dict[str, Any] = spool_phase(profiler, calls, timeout_s)
        _common.log("spooled", **{k: round(v, 2) for k, v in figures.items()})
        broker, replay = replay_phase(profiler, port, Path(tmp) / "tansu", calls, timeout_s)
        try:
            figures.update(replay)
            stats = profiler.stats()
            profiler.close(5.0)
        finally:
            broker.stop(timeout_s=5.0)
    figures.update(
        calls=calls,
        spooled_events=stats["spooled_events"],
        replayed_events=stats["replayed_events"],
        dropped=stats["dropped"],
    )
    if stats["dropped"]:
        _common.log("WARNING: events dropped", dropped=stats["dropped"])
    return figures


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, same method")
    args = parser.parse_args()
    _common.setup()
    _common.emit("spool", run(100_000 if args.quick else 500_000, timeout_s=120.0))


if __name__ == "__main__":
    main()
