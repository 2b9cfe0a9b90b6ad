"""Shared helpers of the benchmarks: a local Tansu broker, percentiles, logs and the result line."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptprof import KafkaSettings
from promptprof._logs import setup_logging
from promptprof_tools.stack.ports import free_port
from promptprof_tools.stack.tansu import TansuBroker
from promptprof_tools.stack.topics import create_topics


def setup(level: str = "warning") -> None:
    """Send every log to stderr (structlog prints to stdout unless told otherwise)."""
    setup_logging("console", level)


def log(message: str, **fields: Any) -> None:
    """One progress line on stderr."""
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"[{time.strftime('%H:%M:%S')}] {message} {extra}".rstrip(), file=sys.stderr, flush=True)


@contextmanager
def broker(topics: Sequence[str], partitions: int = 4) -> Iterator[str]:
    """A Tansu broker (memory storage) on a free loopback port with ``topics``; yields bootstrap."""
    with tempfile.TemporaryDirectory(prefix="promptprof-bench-") as tmp:
        tansu = TansuBroker(free_port(), Path(tmp))
        tansu.start(timeout_s=30.0)
        try:
            kafka = KafkaSettings(bootstrap_servers=tansu.bootstrap)
            asyncio.run(create_topics(kafka, topics, partitions))
            log("broker up", bootstrap=tansu.bootstrap, pid=tansu.pid)
            yield tansu.bootstrap
        finally:
            tansu.stop(timeout_s=5.0)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of an already sorted sequence (nearest rank)."""
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[rank])


def emit(bench: str, figures: dict[str, Any]) -> None:
    """Print the one JSON result line on stdout."""
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps({"bench": bench, **rounded}), flush=True)
