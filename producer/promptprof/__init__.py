"""promptprof: profile the prompts a service sends to LLMs.

The public API is small: :func:`profile` (decorator), :func:`track` (context manager),
:func:`configure`, :func:`get_profiler` and :func:`shutdown`. Client wrappers live in
:mod:`promptprof.integrations`.
"""

from promptprof._config import ConfigError, Settings, load_settings
from promptprof._profiler import Profiler, configure, get_profiler, profile, shutdown, track
from promptprof._record import Call

__all__ = [
    "Call",
    "ConfigError",
    "Profiler",
    "Settings",
    "configure",
    "get_profiler",
    "load_settings",
    "profile",
    "shutdown",
    "track",
]
__version__ = "0.1.0"
