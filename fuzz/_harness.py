"""What both atheris harnesses share: coverage for promptprof's modules, then the fuzz loop."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris  # type: ignore[import-untyped]


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Instrument promptprof's own modules (instrument_all() takes minutes) and fuzz."""
    for name, module in list(sys.modules.items()):
        if name.startswith(("promptprof", "promptprof_processor", "promptprof_compare")):
            for value in list(vars(module).values()):
                if callable(value) and getattr(value, "__module__", None) == name:
                    with contextlib.suppress(TypeError, AttributeError):
                        setattr(module, value.__name__, atheris.instrument_func(value))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
