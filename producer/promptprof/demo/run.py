"""``promptprof demo``: the main job on the local stack.

Starts a stream-processor worker, drives simulated traffic through the real producer into
Kafka, and shows live what was sent and what the worker wrote to InfluxDB.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from promptprof.config import Settings
from promptprof.demo.readback import latest_windows
from promptprof.demo.traffic import TrafficGenerator
from promptprof.demo.view import render, windows_table
from promptprof.demo.worker import DEMO_LATENESS_S, start_worker, stop_worker
from promptprof.profiler import Profiler

READBACK_EVERY_S = 2.0
REPORT_PATH = Path("report.html")


async def run_demo(settings: Settings, duration_s: float, rate: float, config: Path | None) -> int:
    """Run the worker and the traffic, show it live, and report what arrived."""
    from promptprof.stack import ensure_topics

    await ensure_topics(settings.kafka, settings.topics)
    worker = start_worker(settings.stack.state_dir, config)
    try:
        status = await _drive(settings, duration_s, rate)
    finally:
        stop_worker(worker)
    return status or _write_report(settings)


def _write_report(settings: Settings) -> int:
    from promptprof_processor.report.command import report_command

    out = REPORT_PATH.resolve()
    status = report_command(settings, "1h", out, None)
    print(f"report: {out}")
    return status


async def _drive(settings: Settings, duration_s: float, rate: float) -> int:
    profiler = Profiler(settings)
    generator = TrafficGenerator(profiler, rate=rate)
    console = Console()
    rows: list[dict[str, object]] = []
    next_read = 0.0
    with Live(console=console, refresh_per_second=4) as live:
        task = asyncio.create_task(generator.run(duration_s))
        drain_until = float("inf")
        while time.monotonic() < drain_until:
            if task.done() and drain_until == float("inf"):
                await asyncio.to_thread(profiler.close, 10.0)
                drain_until = time.monotonic() + DEMO_LATENESS_S + 12
            if time.monotonic() >= next_read:
                rows = await asyncio.to_thread(_read, settings)
                next_read = time.monotonic() + READBACK_EVERY_S
            live.update(render(generator.stats, profiler.stats(), windows_table(rows)))
            await asyncio.sleep(0.25)
    stats = profiler.stats()
    console.print(
        f"sent {stats['sent_events']:,} events in {stats['sent_records']:,} Kafka records to "
        f"{settings.topics.calls!r}; dropped {stats['dropped']:,}; "
        f"{len(rows)} series with windows in InfluxDB database {settings.influx.database!r}"
    )
    return 0 if stats["dropped"] == 0 and rows else 1


def _read(settings: Settings) -> list[dict[str, object]]:
    try:
        return latest_windows(settings.influx)
    except Exception:  # InfluxDB not ready yet: show the last rows we had
        return []
