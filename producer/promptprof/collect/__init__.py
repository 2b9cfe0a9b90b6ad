"""``promptprof collect``: an OTLP/HTTP receiver that turns GenAI spans into call events.

A service that already exports OpenTelemetry traces points its OTLP exporter (or an
OpenTelemetry Collector's ``otlphttp`` exporter) at ``http://HOST:14318`` with no code change.
See :mod:`promptprof.collect.server`.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from pathlib import Path

import structlog

from promptprof._config import ConfigError, load_settings

log = structlog.get_logger("promptprof.collect")
_GC_GEN0_THRESHOLD = 50_000


def collect_command(config: Path | None) -> int:
    """Run the receiver until SIGINT/SIGTERM, then flush the producer; the exit code."""
    from promptprof.collect.settings import CollectorSettings

    try:
        settings = load_settings(config, CollectorSettings)
    except ConfigError as exc:
        print(exc)
        return 2
    return asyncio.run(_run(settings))


async def _run(settings: object) -> int:
    from promptprof._profiler import Profiler
    from promptprof.collect.server import Receiver, bound_port, serve
    from promptprof.collect.settings import CollectorSettings

    assert isinstance(settings, CollectorSettings)
    profiler = Profiler(settings)
    receiver = Receiver(profiler, settings)
    runner = await serve(receiver, settings.collect.host, settings.collect.port)
    grpc_server = None
    if settings.collect.grpc_port is not None:
        from promptprof.collect.grpc_server import serve_grpc

        grpc_server, grpc_port = await serve_grpc(
            receiver, settings.collect.host, settings.collect.grpc_port)
        log.info("promptprof.collect_grpc_listening", port=grpc_port)
    log.info("promptprof.collect_listening", host=settings.collect.host,
             port=bound_port(runner))
    # A request allocates thousands of short-lived protobuf wrappers and calls: collections
    # every 700 allocations (Python's default) cost the receiver a third of its time on them.
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    if grpc_server is not None:
        await grpc_server.stop(5)
    kept = await asyncio.to_thread(profiler.close)
    log.info("promptprof.collect_stopped", nothing_lost=kept, **vars(receiver.stats))
    return 0 if kept else 1
