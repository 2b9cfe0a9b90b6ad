"""Alerts of the stream processor: SLO and anomaly rules on closed windows, delivered to the
alerts topic, InfluxDB and webhooks.

- :class:`AlertEngine` (pure, synchronous): ``observe(windows, partition)`` returns the alert
  events that closed windows trigger; ``state_bytes(partition)``/``restore(partition, data)``
  checkpoint its per-series state.
- :class:`AlertDispatcher` (asyncio): ``submit(alerts)`` queues without blocking; ``run()`` (or
  ``start()``) delivers in the background; ``close()`` finishes.
- :class:`AlertSettings`: the ``alerts`` settings section; rules come from a YAML file
  (:func:`load_rules`).
"""

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
    ReceiverSettings,
    RetryPolicy,
    RouteSettings,
)
from promptprof_processor.alerts.webhooks import WebhookConfigError, sign, verify_signature

__all__ = [
    "ALERT_MEASUREMENT",
    "Alert",
    "AlertDispatcher",
    "AlertEngine",
    "AlertRules",
    "AlertSettings",
    "DispatchStats",
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
