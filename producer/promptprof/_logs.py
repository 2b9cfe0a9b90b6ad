"""structlog set-up for promptprof's own processes (CLI, worker, demo).

The producer library never configures logging: it logs through structlog and leaves the
set-up to the host.
"""

from __future__ import annotations

import logging
import sys

import structlog


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    """Key-value logs to stderr: JSON in production, aligned text on a console."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
