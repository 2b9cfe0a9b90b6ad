"""``bytes_held_max``: the memory 100,000 queued calls with 2 KB texts take under a byte limit.

A profiler with ``max_bytes_held`` = :data:`LIMIT` and Kafka unreachable (a closed loopback
port, no spool: nothing can leave, everything recorded stays queued or is dropped) records
100,000 calls through ``track()``, each with its own 2 KB prompt and 2 KB response text and a
label, as a wrapped client with ``capture_text`` would. ``bytes_held_max`` is tracemalloc's peak
of traced memory during the recording minus the traced memory before it (every Python
allocation of the process, the sender thread's included); ``bytes_held_counted`` is what the
producer's own accounting reports (``stats()["bytes_held"]``), ``dropped_bytes_limit`` the calls
it refused. Target: ``bytes_held_max <= bytes_limit``.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from promptprof import Profiler, load_settings
from promptprof_tools.stack.ports import free_port

LIMIT = 16 * 1024 * 1024
CALLS = 100_000
TEXT = "x" * 2048


def figures(calls: int = CALLS, limit: int = LIMIT) -> dict[str, Any]:
    """Record ``calls`` calls with texts under ``limit`` bytes; the figures."""
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_ms": 1000},
        producer={"max_bytes_held": limit, "metrics_log_interval_s": 0, "capture_text": True},
    )
    profiler = Profiler(settings)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(calls):
            with profiler.track("bench-memory", "v1", model="gpt-4o-mini") as call:
                call.set_text(f"{TEXT}{i}", f"{i}{TEXT}")
                call.label("tenant", f"t{i % 50}")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    stats = profiler.stats()
    profiler.close(0.1)
    return {
        "bytes_held_max": peak,
        "bytes_limit": limit,
        "bytes_held_ratio_vs_limit": peak / limit,
        "bytes_held_counted": stats["bytes_held"],
        "bytes_held_calls": calls,
        "bytes_held_queued": stats["queued"],
        "dropped_bytes_limit": stats["dropped_bytes_limit"],
    }
