"""Alert settings: the rules file, receivers, routes, repeat interval, retries and bounds.

Meant as the ``alerts`` section of the processor's settings, so from YAML::

    alerts:
      rules_file: alerts.yaml
      repeat_interval_s: 3600
      allowed_hosts: [hooks.slack.com, alertmanager.internal]
      receivers:
        - {name: oncall, format: generic, url: "https://hooks.example.com/promptprof",
           secret_env: PROMPTPROF_WEBHOOK_SECRET}
        - {name: slack, format: slack, url_env: PROMPTPROF_SLACK_WEBHOOK_URL}
        - {name: am, format: alertmanager, url: "http://alertmanager.internal:9093/api/v2/alerts"}
      routes:
        - {receivers: [slack], severities: [critical]}
        - {receivers: [oncall, am]}
      grouping: {group_by: [service, model], group_wait_s: 10, group_interval_s: 300}

or from the environment (lists as JSON), e.g. ``PROMPTPROF_ALERTS__RULES_FILE=alerts.yaml``,
``PROMPTPROF_ALERTS__RECEIVERS='[{"name": "oncall", "url": "...", "secret_env": "..."}]'``.

Secrets (a signing key, or a URL that holds a token, as Slack's do) are best given by the name
of an environment variable (``secret_env``, ``url_env``) or a file (``secret_file``,
``url_file``) read when the dispatcher starts; they are never logged. A route with no
``prompt_ids``, ``services`` or ``severities`` matches every alert; an alert goes to the
receivers of every matching route, once each. Each receiver gets alerts grouped
(:mod:`.grouping`) and at most ``max_per_s`` notifications per second (default: 1 for Slack,
10 for the others).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from promptprof_processor.alerts.rules import Severity

WebhookFormat = Literal["generic", "slack", "alertmanager", "alertmanager_webhook"]


class RetryPolicy(BaseModel):
    """How webhook deliveries are retried."""

    attempts: int = Field(default=5, ge=1, le=20, description="tries in all, 1..20")
    initial_backoff_s: float = Field(default=1.0, gt=0, description="seconds before try 2")
    max_backoff_s: float = Field(default=60.0, gt=0, description="cap of the doubling backoff")
    timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="seconds one try may take, response included"
    )


DEFAULT_MAX_PER_S: dict[str, float] = {"slack": 1.0}
OTHERS_MAX_PER_S = 10.0


class GroupingSettings(BaseModel):
    """How a receiver's alerts are grouped into notifications (see :mod:`.grouping`)."""

    group_by: list[str] = Field(
        default=["service", "model"], description="alert fields (or label:<name>) of a group"
    )
    group_wait_s: float = Field(default=10.0, ge=0, le=3600)
    group_interval_s: float = Field(default=300.0, ge=0, le=86_400)
    max_alerts: int = Field(default=500, ge=1, le=10_000, description="alerts per notification")

    @field_validator("group_by")
    @classmethod
    def _known_keys(cls, value: list[str]) -> list[str]:
        unknown = [k for k in value if k not in GROUP_KEYS and not k.startswith("label:")]
        if unknown:
            raise ValueError(f"unknown group_by keys {unknown}; known: {sorted(GROUP_KEYS)}")
        return value


GROUP_KEYS = frozenset({
    "service", "prompt_id", "prompt_version", "model", "rule", "kind", "metric", "severity",
    "fingerprint",
})


class ReceiverSettings(BaseModel):
    """One webhook receiver."""

    model_config = ConfigDict(hide_input_in_errors=True)  # errors must not quote URL or secret

    name: str = Field(min_length=1, max_length=100)
    format: WebhookFormat = "generic"
    url: SecretStr | None = Field(default=None, description="the URL itself")
    url_env: str | None = Field(default=None, description="an environment variable holding it")
    url_file: Path | None = Field(default=None, description="a file holding it")
    secret: SecretStr | None = Field(default=None, description="HMAC key (prefer secret_env)")
    secret_env: str | None = Field(default=None, description="a variable holding the HMAC key")
    secret_file: Path | None = Field(default=None, description="a file holding the HMAC key")
    max_per_s: float | None = Field(
        default=None, gt=0, le=1000, description="notifications per second; none: by format"
    )

    def rate(self) -> float:
        """Notifications per second this receiver takes."""
        if self.max_per_s is not None:
            return self.max_per_s
        return DEFAULT_MAX_PER_S.get(self.format, OTHERS_MAX_PER_S)

    @model_validator(mode="after")
    def _sources(self) -> ReceiverSettings:
        urls = [s for s in (self.url, self.url_env, self.url_file) if s is not None]
        if len(urls) != 1:
            raise ValueError(f"receiver {self.name!r}: give exactly one of url, url_env, url_file")
        secrets = [s for s in (self.secret, self.secret_env, self.secret_file) if s is not None]
        if len(secrets) > 1:
            raise ValueError(
                f"receiver {self.name!r}: give at most one of secret, secret_env, secret_file"
            )
        return self


class RouteSettings(BaseModel):
    """Which alerts go to which receivers; an empty list matches anything."""

    receivers: list[str] = Field(min_length=1)
    prompt_ids: list[str] = []
    services: list[str] = []
    severities: list[Severity] = []


class AlertSettings(BaseModel):
    """Alerting in the stream processor."""

    model_config = ConfigDict(hide_input_in_errors=True)  # errors must not quote receivers

    enabled: bool = True
    rules_file: Path | None = Field(default=None, description="YAML rules; none: built-in rules")
    repeat_interval_s: float = Field(
        default=3600.0, gt=0, description="event-time seconds between reminders of a firing alert"
    )
    queue_size: int = Field(
        default=10_000, ge=10, le=1_000_000,
        description="alerts waiting for the topic, InfluxDB or dead letters, 10..1000000",
    )
    retry: RetryPolicy = RetryPolicy()
    receivers: list[ReceiverSettings] = []
    routes: list[RouteSettings] = []
    grouping: GroupingSettings = GroupingSettings()
    allowed_hosts: list[str] = Field(
        default=[], description="webhook hosts allowed; [] allows any host"
    )
    max_response_bytes: int = Field(default=65_536, ge=0, le=16_777_216)
    concurrency_per_receiver: int = Field(default=4, ge=1, le=64)
    publish_topic: bool = True
    write_influx: bool = True

    @model_validator(mode="after")
    def _routes_name_receivers(self) -> AlertSettings:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receiver names must be distinct")
        for route in self.routes:
            unknown = sorted(set(route.receivers) - set(names))
            if unknown:
                raise ValueError(f"route names unknown receivers {unknown}; known: {names}")
        return self
