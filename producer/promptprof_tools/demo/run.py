"""``promptprof demo``: the main job on the local stack.

Starts a stream-processor worker and a local webhook receiver, drives simulated traffic through
the real producer into Kafka (with a latency regression injected into one prompt partway
through), and shows live what was sent, what the worker wrote to InfluxDB and the alerts the
receiver got.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live

from promptprof import Profiler
from promptprof_tools.demo.readback import latest_windows
from promptprof_tools.demo.traffic import Injection, TrafficGenerator
from promptprof_tools.demo.view import alerts_table, render, windows_table
from promptprof_tools.demo.worker import DEMO_LATENESS_S, start_worker, stop_worker
from promptprof_tools.settings import ToolSettings

if TYPE_CHECKING:
    from promptprof_processor.alerts import WebhookReceiver

READBACK_EVERY_S = 2.0
INJECTED_PROMPT = "sql-gen"
DEMO_SERVICE = "support-bot"
INJECT_AT = 0.55  # fraction of the run after which the injected prompt gets slower
REPORT_PATH = Path("report.html")


async def run_demo(
    settings: ToolSettings, duration_s: float, rate: float, config: Path | None
) -> int:
    """Run the worker and the traffic, show it live, and report what arrived."""
    from promptprof_processor.alerts import WebhookReceiver
    from promptprof_tools.stack import ensure_topics

    await ensure_topics(settings.kafka, settings.topics)
    secret = secrets.token_hex(16)
    with WebhookReceiver(secret) as receiver:
        worker = start_worker(settings.stack.state_dir, config, receiver.url, secret)
        try:
            status = await _drive(settings, duration_s, rate, receiver)
        finally:
            stop_worker(worker)
    return status or _write_report(settings)


def _write_report(settings: ToolSettings) -> int:
    from promptprof_processor.report.command import report_command

    out = REPORT_PATH.resolve()
    status = report_command(settings, "1h", out, None)
    print(f"report: {out}")
    return status


async def _drive(
    settings: ToolSettings, duration_s: float, rate: float, receiver: WebhookReceiver
) -> int:
    profiler = Profiler(_with_demo_service(settings))
    injection = Injection(INJECTED_PROMPT, after_s=duration_s * INJECT_AT, latency_factor=2.5)
    generator = TrafficGenerator(profiler, rate=rate, injection=injection)
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
            alerts = alerts_table(receiver.alerts(), injection)
            live.update(render(generator.stats, profiler.stats(), windows_table(rows), alerts))
            await asyncio.sleep(0.25)
    for alert in receiver.alerts():
        console.print(f"webhook received: [{alert['state']}] {alert['message']}", markup=False)
    stats = profiler.stats()
    console.print(
        f"sent {stats['sent_events']:,} events in {stats['sent_records']:,} Kafka records to "
        f"{settings.topics.calls!r}; dropped {stats['dropped']:,}; "
        f"{len(rows)} series with windows in InfluxDB database {settings.influx.database!r}"
    )
    return 0 if stats["dropped"] == 0 and rows else 1


def _with_demo_service(settings: ToolSettings) -> ToolSettings:
    """Name the demo's service unless the configuration already names one."""
    if "service_name" in settings.producer.model_fields_set:
        return settings
    producer = settings.producer.model_copy(update={"service_name": DEMO_SERVICE})
    return settings.model_copy(update={"producer": producer})


def _read(settings: ToolSettings) -> list[dict[str, object]]:
    try:
        return latest_windows(settings.influx)
    except Exception:  # InfluxDB not ready yet: show the last rows we had
        return []
