"""promptprof: profile the prompts a service sends to LLMs.

The public API is small: :func:`profile` (decorator), :func:`track` (context manager),
:func:`configure`, :func:`get_profiler` and :func:`shutdown`. Client wrappers live in
:mod:`promptprof.integrations`.
"""

from promptprof._config import (
    ConfigError,
    KafkaSettings,
    ProducerSettings,
    Settings,
    TopicSettings,
    load_settings,
)
from promptprof._profiler import Profiler, configure, get_profiler, profile, shutdown, track
from promptprof._record import Call

__all__ = [
    "Call",
    "ConfigError",
    "KafkaSettings",
    "ProducerSettings",
    "Profiler",
    "Settings",
    "TopicSettings",
    "configure",
    "get_profiler",
    "load_settings",
    "profile",
    "shutdown",
    "track",
]
__version__ = "0.1.0"
