"""``promptprof demo``: the main job on the local stack."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.live import Live

from promptprof.config import Settings
from promptprof.demo.traffic import TrafficGenerator
from promptprof.demo.view import render
from promptprof.profiler import Profiler


async def run_demo(settings: Settings, duration_s: float, rate: float) -> int:
    """Drive simulated traffic through the real producer into Kafka, shown live."""
    from promptprof.stack import ensure_topics

    await ensure_topics(settings.kafka, settings.topics)
    profiler = Profiler(settings)
    generator = TrafficGenerator(profiler, rate=rate)
    console = Console()
    with Live(console=console, refresh_per_second=4) as live:
        task = asyncio.create_task(generator.run(duration_s))
        while not task.done():
            live.update(render(generator.stats, profiler.stats()))
            await asyncio.wait({task}, timeout=0.25)
        await asyncio.to_thread(profiler.close, 10.0)
        live.update(render(generator.stats, profiler.stats()))
    stats = profiler.stats()
    console.print(
        f"sent {stats['sent_events']:,} events in {stats['sent_records']:,} Kafka records "
        f"to {settings.topics.calls!r}; dropped {stats['dropped']:,}"
    )
    return 0 if stats["dropped"] == 0 else 1
