"""Alerts of the stream processor: SLO and anomaly rules on closed windows, delivered to the
alerts topic, InfluxDB and webhooks.

- :class:`AlertEngine` (pure, synchronous): ``observe(windows, partition)`` returns the alert
  events that closed windows trigger; ``changed_states(partition)``/``restore_states(partition,
  entries)`` checkpoint its state as small per-series entries (``state_bytes``/``restore``: all
  of them as one blob).
- :class:`AlertDispatcher` (asyncio): ``submit(alerts)`` queues without blocking; ``run()`` (or
  ``start()``) delivers in the background, grouped and rate-limited per receiver; ``close()``
  finishes.
- :class:`AlertSettings`: the ``alerts`` settings section; rules come from a YAML file
  (:func:`load_rules`).

Names are imported on first use, so that the settings module can import
:mod:`promptprof_processor.alerts.settings` without loading the engine, Kafka or HTTP clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptprof_processor.alerts.delivery import AlertDispatcher, DispatchStats, Router
    from promptprof_processor.alerts.detector import AlertEngine
    from promptprof_processor.alerts.events import ALERT_MEASUREMENT, Alert, alert_line
    from promptprof_processor.alerts.receiver import WebhookReceiver
    from promptprof_processor.alerts.rules import (
        AlertRules,
        RulesError,
        RuleSet,
        load_rules,
        parse_rules,
    )
    from promptprof_processor.alerts.settings import (
        AlertSettings,
        GroupingSettings,
        ReceiverSettings,
        RetryPolicy,
        RouteSettings,
    )
    from promptprof_processor.alerts.webhooks import (
        WebhookConfigError,
        sign,
        verify_signature,
    )

_HOMES = {
    "delivery": ("AlertDispatcher", "DispatchStats", "Router"),
    "detector": ("AlertEngine",),
    "events": ("ALERT_MEASUREMENT", "Alert", "alert_line"),
    "receiver": ("WebhookReceiver",),
    "rules": ("AlertRules", "RuleSet", "RulesError", "load_rules", "parse_rules"),
    "settings": (
        "AlertSettings", "GroupingSettings", "ReceiverSettings", "RetryPolicy", "RouteSettings",
    ),
    "webhooks": ("WebhookConfigError", "sign", "verify_signature"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "ALERT_MEASUREMENT",
    "Alert",
    "AlertDispatcher",
    "AlertEngine",
    "AlertRules",
    "AlertSettings",
    "DispatchStats",
    "GroupingSettings",
    "ReceiverSettings",
    "RetryPolicy",
    "RouteSettings",
    "Router",
    "RuleSet",
    "RulesError",
    "WebhookConfigError",
    "WebhookReceiver",
    "alert_line",
    "load_rules",
    "parse_rules",
    "sign",
    "verify_signature",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
