"""The alert event: one firing, reminder or resolution of one rule on one series.

The same JSON document (:meth:`Alert.to_json`) is the record on the alerts topic and the body of
the ``generic`` webhook. Its fields (schema_version 1):

``alert_id``
    Idempotency key: the same alert re-emitted (a worker that re-processes windows after a
    crash) has the same id; receivers should drop an id they have already handled.
``fingerprint``
    The identity of the incident: the series and the rule, whatever the window width (a rule
    firing on the 10 s and the 60 s windows of one series is one incident); every event of every
    episode shares it.
``state``
    ``firing`` (``repeat`` true for a reminder of an alert still firing after the repeat
    interval), ``resolved`` (the figure is back within the band of the baseline from before the
    incident, or within its SLO, for the hysteresis count of windows) or ``accepted`` (an
    anomaly that lasted the rule's ``accept_after_s`` became the series' new baseline: it is not
    over, it is the new normal).
``kind``, ``rule``, ``metric``, ``severity``
    ``slo``, ``anomaly``, ``burn_rate``, ``spend`` or ``pipeline``
    (:mod:`promptprof_processor.health.rules`); the rule id (``slo.latency_p95_ms``,
    ``anomaly.error_rate``, ``burn.success.3600s``, ``spend.day``...); the figure judged
    (for burn rates the burn rate over the long window, for spend the projected spend);
    ``info``, ``warning`` or ``critical``.
``series``
    ``service``, ``prompt_id``, ``prompt_version``, ``model``, ``labels``; budgets and spend are
    judged per prompt, so their version and model are ``*``.
``window``
    ``start_ns``, ``end_ns``, ``width_s`` of the window that made the decision.
``started_ns``
    The start of the episode's first bad window.
``observed``, ``baseline``, ``threshold``, ``score``, ``direction``
    The figure in that window; the baseline it was judged against (for SLOs, the anomaly
    baseline when there is one); the limit it crossed (or, when resolved, the limit it is back
    within); the deviation in robust standard deviations (anomalies); ``above`` or ``below``.
``baseline_version``, ``previous_version``
    The prompt version the baseline was learned from, when it is not (only) the series' own:
    a new version starts with a copy of the previous version's baseline, so a change that the
    new version brought is reported against the old version's figures.
``message``
    One line for people.

In InfluxDB each event is a point of measurement ``llm_alert`` at the window end: tags
``service``, ``prompt_id``, ``prompt_version``, ``model``, ``rule``, ``severity``, ``state``,
``width`` and the series' label dimensions; fields ``observed``, ``baseline``, ``threshold``,
``score``, ``message``, ``alert_id`` and ``baseline_version``.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict

from promptprof_processor.alerts.rules import Severity
from promptprof_processor.sink.lineprotocol import FieldValue, encode_line
from promptprof_processor.windows.figures import SeriesTags

ALERT_MEASUREMENT = "llm_alert"
SCHEMA_VERSION: Literal[1] = 1

State = Literal["firing", "resolved", "accepted"]
Kind = Literal["slo", "anomaly", "burn_rate", "spend", "pipeline"]
ANY = "*"  # the version and model of an alert judged over a whole prompt


class AlertWindow(BaseModel):
    """The window that made the decision."""

    model_config = ConfigDict(frozen=True)

    start_ns: int
    end_ns: int
    width_s: int


class Alert(BaseModel):
    """One alert event (see the module documentation for the fields)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: str
    fingerprint: str
    state: State
    repeat: bool = False
    kind: Kind
    rule: str
    metric: str
    severity: Severity
    series: SeriesTags
    window: AlertWindow
    started_ns: int
    observed: float
    baseline: float | None
    threshold: float
    score: float | None = None
    direction: Literal["above", "below"]
    baseline_version: str | None = None
    previous_version: str | None = None
    message: str

    def to_json(self) -> bytes:
        """The alert as UTF-8 JSON (the topic record and the generic webhook body)."""
        return orjson.dumps(self.model_dump())

    @classmethod
    def from_json(cls, data: bytes | str) -> Alert:
        """An alert from :meth:`to_json` output."""
        return cls.model_validate(orjson.loads(data))


def series_identity(series: SeriesTags) -> str:
    """The series' tags as one string (labels sorted)."""
    labels = "\x1e".join(f"{k}={v}" for k, v in sorted(series.labels.items()))
    parts = (series.service, series.prompt_id, series.prompt_version, series.model, labels)
    return "\x1f".join(parts)


def fingerprint(series: SeriesTags, rule: str) -> str:
    """A stable id of an incident: (series, rule), whatever the window width."""
    return _digest(f"{series_identity(series)}\x1f{rule}", 16)


def alert_id(fingerprint_: str, state: State, started_ns: int, window_end_ns: int) -> str:
    """The idempotency key of one event of one episode."""
    return _digest(f"{fingerprint_}:{state}:{started_ns}:{window_end_ns}", 32)


def _digest(text: str, chars: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def alert_tags(alert: Alert) -> dict[str, str]:
    """The tag set of an alert's ``llm_alert`` point."""
    series = alert.series
    return {
        **series.labels,
        "service": series.service,
        "prompt_id": series.prompt_id,
        "prompt_version": series.prompt_version,
        "model": series.model,
        "rule": alert.rule,
        "severity": alert.severity,
        "state": alert.state,
        "width": f"{alert.window.width_s}s",
    }


def alert_line(alert: Alert) -> str:
    """The ``llm_alert`` line-protocol point of an alert (timestamp: the window end)."""
    fields: dict[str, FieldValue | None] = {
        "observed": alert.observed,
        "baseline": alert.baseline,
        "threshold": alert.threshold,
        "score": alert.score,
        "message": alert.message,
        "alert_id": alert.alert_id,
        "baseline_version": alert.baseline_version,
    }
    return encode_line(ALERT_MEASUREMENT, alert_tags(alert), fields, alert.window.end_ns)
