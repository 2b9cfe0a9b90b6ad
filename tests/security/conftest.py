"""Fixtures of the security tests: every log line promptprof writes, rendered to text."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
import structlog


class LogText:
    """What structlog and stdlib logging wrote while a test ran (rendered, as a string)."""

    def __init__(self) -> None:
        self.structlog = io.StringIO()
        self.stdlib = io.StringIO()

    @property
    def text(self) -> str:
        return self.structlog.getvalue() + self.stdlib.getvalue()


def _uncache(modules: list[ModuleType]) -> None:
    # a logger used once under cache_logger_on_first_use keeps its old processors: forget them
    for module in modules:
        proxy = getattr(module, "log", None)
        if isinstance(proxy, structlog._config.BoundLoggerLazyProxy):
            proxy.__dict__.pop("bind", None)


@pytest.fixture
def logs() -> Iterator[LogText]:
    """Render every structlog event (exceptions included) and every stdlib record at DEBUG."""
    captured = LogText()
    modules = [m for name, m in list(sys.modules.items())
               if name.startswith(("promptprof", "promptprof_processor")) and m is not None]
    _uncache(modules)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=captured.structlog),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(captured.stdlib)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        structlog.reset_defaults()
        _uncache(modules)
