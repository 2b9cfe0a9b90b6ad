"""Webhooks: receivers, payload formats, HMAC signing and one delivery with retries.

Every request is ``POST`` with a JSON body and these headers:

``Content-Type: application/json``, ``User-Agent: promptprof-alerts/1``
``Idempotency-Key``
    The alert's ``alert_id`` (for a notification of several alerts, a digest of their ids): the
    same on every try and on a re-emission of the same alerts.
``X-Promptprof-Event``
    ``firing``, ``resolved`` or ``accepted``.
``X-Promptprof-Alerts``
    How many alerts the notification holds.
``X-Promptprof-Timestamp``, ``X-Promptprof-Signature`` (when the receiver has a secret)
    Unix seconds of this try, and ``sha256=`` + the hex HMAC-SHA256, keyed by the secret, of
    ``"<timestamp>." + body`` (the raw body bytes). A receiver recomputes it, compares in
    constant time and rejects timestamps more than five minutes away
    (:func:`verify_signature`).

Formats:

``generic``
    The alert event itself (:mod:`promptprof_processor.alerts.events` documents each field:
    observed, baseline, threshold, score, window, series and labels, versions, message).
``slack``
    A Slack incoming-webhook message (``text`` plus blocks).
``alertmanager``
    A list of one alert for Alertmanager's ``POST /api/v2/alerts``: labels (alertname
    ``promptprof_<rule>``, series, rule, severity), annotations (message and figures),
    ``startsAt`` and ``endsAt`` (a firing alert's ``endsAt`` lies two repeat intervals after its
    window, so Alertmanager keeps it active between reminders).
``alertmanager_webhook``
    The body Alertmanager itself sends to webhook receivers (version 4), for tools that take it.

Delivery (:class:`WebhookSender`): redirects are not followed (a 3xx fails for good), each try
is bounded by ``timeout_s`` as a whole, at most ``max_response_bytes`` of the answer are read;
2xx succeeds; connection errors, time-outs, 408, 425, 429 and 5xx are retried with a doubling,
jittered backoff (honouring ``Retry-After`` up to the cap); other statuses fail at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from pydantic import SecretStr

from promptprof_processor.alerts.events import Alert
from promptprof_processor.alerts.grouping import Limiter, Notification
from promptprof_processor.alerts.metrics import METRICS
from promptprof_processor.alerts.settings import ReceiverSettings, RetryPolicy, WebhookFormat

log = structlog.get_logger("promptprof.alerts")

USER_AGENT = "promptprof-alerts/1"
SIGNATURE_HEADER = "X-Promptprof-Signature"
TIMESTAMP_HEADER = "X-Promptprof-Timestamp"
EVENT_HEADER = "X-Promptprof-Event"
COUNT_HEADER = "X-Promptprof-Alerts"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_TOLERANCE_S = 300
RETRYABLE_STATUSES = frozenset({408, 425, 429})
_LABEL_NAME = re.compile(r"[^A-Za-z0-9_]")
SLACK_SECTION_CHARS = 2900  # Slack takes at most 3000 characters in a section's text


class _HideRequestUrls(logging.Filter):
    """httpx logs each request's full URL at INFO; a webhook URL may hold a token (Slack's do).

    Keeps the scheme, host and port of the logged URL and hides its path, query and userinfo.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], httpx.URL):
            url = args[1]
            port = f":{url.port}" if url.port else ""
            record.args = (args[0], f"{url.scheme}://{url.host}{port}/<hidden>", *args[2:])
        return True


_HIDE_REQUEST_URLS = _HideRequestUrls()
logging.getLogger("httpx").addFilter(_HIDE_REQUEST_URLS)


class WebhookConfigError(ValueError):
    """A receiver that cannot be used: bad URL, host not allowed, secret missing."""


# -- receivers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receiver:
    """A resolved receiver: its URL and secret are read and checked, and kept out of reprs."""

    name: str
    format: WebhookFormat
    host: str
    url: str = field(repr=False)
    secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, settings: ReceiverSettings, allowed_hosts: Sequence[str] = ()) -> Receiver:
        """Read the URL and secret (inline, environment or file) and validate the URL."""
        name = settings.name
        url = _read_secret(name, "url", settings.url, settings.url_env, settings.url_file)
        if url is None:
            raise WebhookConfigError(f"receiver {name!r}: no URL")
        host = validate_url(url, allowed_hosts, receiver=name)
        secret = _read_secret(
            name, "secret", settings.secret, settings.secret_env, settings.secret_file
        )
        return cls(name, settings.format, host, url, secret.encode() if secret else None)


def _read_secret(
    receiver: str, what: str, inline: SecretStr | None, env: str | None, path: Path | None
) -> str | None:
    if inline is not None:
        return inline.get_secret_value()
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise WebhookConfigError(
                f"receiver {receiver!r}: environment variable {env} (its {what}) is not set"
            )
        return value.strip()
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise WebhookConfigError(
                f"receiver {receiver!r}: cannot read its {what} file {path}: {exc.strerror}"
            ) from None
    return None


def validate_url(url: str, allowed_hosts: Sequence[str] = (), *, receiver: str = "?") -> str:
    """Check a webhook URL (http or https, a host, allowed if a list is given); return its host.

    An allowed host is a name (``hooks.slack.com``) or a wildcard of subdomains
    (``*.example.com``). Error messages name the receiver and the host, never the whole URL.
    """
    try:
        parsed = httpx.URL(url)
        host = parsed.host.lower()  # decoding an invalid IDNA (xn--) name raises UnicodeError
    except (httpx.InvalidURL, TypeError, UnicodeError):
        raise WebhookConfigError(f"receiver {receiver!r}: the URL is not valid") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookConfigError(
            f"receiver {receiver!r}: URL scheme must be http or https, not {parsed.scheme!r}"
        )
    if not host:
        raise WebhookConfigError(f"receiver {receiver!r}: the URL has no host")
    if allowed_hosts and not any(_host_matches(host, pattern) for pattern in allowed_hosts):
        raise WebhookConfigError(
            f"receiver {receiver!r}: host {host!r} is not in allowed_hosts {list(allowed_hosts)}"
        )
    return host


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


# -- signing ------------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value: ``sha256=`` + HMAC-SHA256(secret, ``"<ts>." + body``)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes, headers: Mapping[str, str], body: bytes, *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S, now: float | None = None,
) -> bool:
    """Whether a request's signature headers are valid for ``body`` (header names any case)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    try:
        timestamp = int(lowered.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature, sign(secret, timestamp, body))


def request_headers(receiver: Receiver, note: Notification, body: bytes) -> dict[str, str]:
    """The headers of one try."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: note.notification_id,
        EVENT_HEADER: note.state,
        COUNT_HEADER: str(len(note.alerts)),
    }
    if receiver.secret:
        timestamp = int(time.time())
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(receiver.secret, timestamp, body)
    return headers


# -- formats ------------------------------------------------------------------------------------


def iso(ns: int) -> str:
    """RFC 3339 UTC time of a Unix-nanosecond timestamp."""
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _figure(alert: Alert, value: float | None) -> str:
    metric = METRICS.get(alert.metric)
    if metric is not None:
        return metric.format(value)
    if value is None:
        return "n/a"
    return f"${value:,.2f}" if alert.kind == "spend" else f"{value:.1f}x"  # spend, burn rate


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_ICONS = {"resolved": ":white_check_mark:", "accepted": ":arrows_counterclockwise:"}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message."""
    icon = _SLACK_ICONS.get(alert.state) or (
        ":rotating_light:" if alert.severity == "critical" else ":warning:"
    )
    state = alert.state.upper() + (" (reminder)" if alert.repeat else "")
    title = f"{icon} [{state}] {alert.severity} {alert.rule}"
    message = _slack_escape(alert.message)
    figures = {
        "Observed": _figure(alert, alert.observed),
        "Baseline": _figure(alert, alert.baseline),
        "Threshold": _figure(alert, alert.threshold),
        "Window": f"{alert.window.width_s}s ending {iso(alert.window.end_ns)}",
    }
    s = alert.series
    context = f"{s.service} / {s.prompt_id} {s.prompt_version} / {s.model} · id {alert.alert_id}"
    return {
        "text": f"{title}: {message}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{message}"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"}
                    for k, v in figures.items()
                ],
            },
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": _slack_escape(context)},
            ]},
        ],
    }


def alertmanager_labels(alert: Alert) -> dict[str, str]:
    """Alertmanager labels: alertname, the series, rule, metric and severity (not the window
    width: the widths of one series are one incident)."""
    s = alert.series
    labels = {f"label_{_LABEL_NAME.sub('_', k)}": v for k, v in s.labels.items()}
    return {
        **labels,
        "alertname": f"promptprof_{_LABEL_NAME.sub('_', alert.rule)}",
        "service": s.service,
        "prompt_id": s.prompt_id,
        "prompt_version": s.prompt_version,
        "model": s.model,
        "rule": alert.rule,
        "kind": alert.kind,
        "metric": alert.metric,
        "severity": alert.severity,
    }


def alertmanager_annotations(alert: Alert) -> dict[str, str]:
    """Alertmanager annotations: the message and the figures."""
    notes = {
        "summary": alert.message,
        "observed": _figure(alert, alert.observed),
        "baseline": _figure(alert, alert.baseline),
        "threshold": _figure(alert, alert.threshold),
        "alert_id": alert.alert_id,
        "width": f"{alert.window.width_s}s",
        "state": alert.state,
    }
    if alert.baseline_version:
        notes["baseline_version"] = alert.baseline_version
    return notes


def alertmanager_alert(alert: Alert, repeat_interval_s: float) -> dict[str, Any]:
    """One alert of Alertmanager's ``POST /api/v2/alerts`` body."""
    ends = alert.window.end_ns
    if alert.state == "firing":
        ends += round(2 * repeat_interval_s * 1e9)
    return {
        "labels": alertmanager_labels(alert),
        "annotations": alertmanager_annotations(alert),
        "startsAt": iso(alert.started_ns),
        "endsAt": iso(ends),
        "generatorURL": "",
    }


def alertmanager_webhook(alert: Alert, receiver: str) -> dict[str, Any]:
    """The version-4 body that Alertmanager sends to webhook receivers, for one alert."""
    labels = alertmanager_labels(alert)
    annotations = alertmanager_annotations(alert)
    status = "firing" if alert.state == "firing" else "resolved"  # accepted: over for Alertmanager
    ends = iso(alert.window.end_ns) if status == "resolved" else "0001-01-01T00:00:00Z"
    return {
        "version": "4",
        "groupKey": alert.fingerprint,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": iso(alert.started_ns),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": alert.fingerprint,
        }],
    }


def slack_group_payload(note: Notification) -> dict[str, Any]:
    """A Slack message for several alerts: a title, then one line per alert."""
    first = note.alerts[0]
    icon = _SLACK_ICONS.get(note.state) or (
        ":rotating_light:" if any(a.severity == "critical" for a in note.alerts) else ":warning:"
    )
    labels = ", ".join(f"{k}={v}" for k, v in note.group_labels.items())
    title = f"{icon} [{note.state.upper()}] {len(note.alerts)} alerts ({labels or first.rule})"
    lines = [f"• {_slack_escape(a.message)}" for a in note.alerts]
    chunks: list[str] = []
    for line in lines:
        if chunks and len(chunks[-1]) + len(line) < SLACK_SECTION_CHARS:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": c}} for c in chunks[:48]]
    return {"text": "\n".join([title, *lines]), "blocks": blocks}


def generic_group(note: Notification) -> dict[str, Any]:
    """The generic body of a notification of several alerts."""
    return {
        "schema_version": 1, "group_key": note.group_key, "group_labels": note.group_labels,
        "state": note.state, "count": len(note.alerts),
        "alerts": [a.model_dump() for a in note.alerts],
    }


def alertmanager_group_webhook(note: Notification, receiver: str) -> dict[str, Any]:
    """The version-4 Alertmanager webhook body of a notification."""
    bodies = [alertmanager_webhook(a, receiver) for a in note.alerts]
    common = dict(bodies[0]["commonLabels"])
    for body in bodies[1:]:
        common = {k: v for k, v in common.items() if body["commonLabels"].get(k) == v}
    return {
        **bodies[0], "groupKey": note.group_key, "groupLabels": note.group_labels,
        "commonLabels": common, "commonAnnotations": {},
        "alerts": [alert for body in bodies for alert in body["alerts"]],
    }


def render(receiver: Receiver, item: Alert | Notification, repeat_interval_s: float) -> bytes:
    """The request body for ``receiver``'s format."""
    note = as_notification(item)
    if len(note.alerts) == 1:
        return _render_one(receiver, note.alerts[0], repeat_interval_s)
    if receiver.format == "generic":
        return orjson.dumps(generic_group(note))
    if receiver.format == "slack":
        return orjson.dumps(slack_group_payload(note))
    if receiver.format == "alertmanager":
        return orjson.dumps([alertmanager_alert(a, repeat_interval_s) for a in note.alerts])
    return orjson.dumps(alertmanager_group_webhook(note, receiver.name))


def _render_one(receiver: Receiver, alert: Alert, repeat_interval_s: float) -> bytes:
    if receiver.format == "generic":
        return alert.to_json()
    if receiver.format == "slack":
        return orjson.dumps(slack_payload(alert))
    if receiver.format == "alertmanager":
        return orjson.dumps([alertmanager_alert(alert, repeat_interval_s)])
    return orjson.dumps(alertmanager_webhook(alert, receiver.name))


def as_notification(item: Alert | Notification) -> Notification:
    """A notification (an alert alone is a notification of one)."""
    if isinstance(item, Notification):
        return item
    return Notification(item.fingerprint, {}, item.state, (item,))


# -- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one try."""

    ok: bool
    retryable: bool
    reason: str
    status: int | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of a delivery, after every try."""

    ok: bool
    attempts: int
    reason: str
    status: int | None = None


class WebhookSender:
    """Posts alerts to receivers with retries; one shared HTTP client."""

    def __init__(
        self, policy: RetryPolicy, *, max_response_bytes: int = 65_536,
        repeat_interval_s: float = 3600.0, client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """A sender following ``policy``; it owns the client it creates."""
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self.repeat_interval_s = repeat_interval_s
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            follow_redirects=False, timeout=httpx.Timeout(policy.timeout_s), trust_env=False,
        )
        self._sleep = sleep
        self.failed_attempts = 0

    async def deliver(
        self, receiver: Receiver, item: Alert | Notification, limiter: Limiter | None = None
    ) -> DeliveryResult:
        """Post an alert or a notification until it succeeds, fails for good, or the tries run
        out; with a ``limiter``, every try takes a slot of it and a ``Retry-After`` holds back
        every send through it."""
        note = as_notification(item)
        body = render(receiver, note, self.repeat_interval_s)
        attempt = Attempt(False, True, "not tried")
        for number in range(1, self.policy.attempts + 1):
            if limiter is not None:
                await limiter.acquire()
            attempt = await self._attempt(receiver, body, request_headers(receiver, note, body))
            if attempt.ok:
                return DeliveryResult(True, number, attempt.reason, attempt.status)
            self.failed_attempts += 1
            last = number == self.policy.attempts or not attempt.retryable
            log.warning(
                "promptprof.webhook_attempt_failed", receiver=receiver.name, host=receiver.host,
                alert_id=note.notification_id, alerts=len(note.alerts), attempt=number,
                reason=attempt.reason, status=attempt.status, final=last,
            )
            if last:
                return DeliveryResult(False, number, attempt.reason, attempt.status)
            backoff = self._backoff(number, attempt.retry_after_s)
            if limiter is not None and attempt.retry_after_s is not None:
                limiter.defer(backoff)  # the next acquire() waits it out, for every send
            else:
                await self._sleep(backoff)
        return DeliveryResult(False, self.policy.attempts, attempt.reason, attempt.status)

    def _backoff(self, number: int, retry_after_s: float | None) -> float:
        cap = self.policy.max_backoff_s
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), cap)
        delay: float = min(self.policy.initial_backoff_s * 2.0 ** (number - 1), cap)
        return delay * random.uniform(0.5, 1.0)

    async def _attempt(self, receiver: Receiver, body: bytes, headers: dict[str, str]) -> Attempt:
        timeout = self.policy.timeout_s
        try:
            async with asyncio.timeout(timeout):
                request = self._client.stream("POST", receiver.url, content=body, headers=headers)
                async with request as response:
                    await _read_limited(response, self.max_response_bytes)
        except TimeoutError:
            return Attempt(False, True, f"no complete answer within {timeout} s")
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}".replace(receiver.url, "<url>")
            return Attempt(False, True, reason[:300])
        return _classify(response)

    async def close(self) -> None:
        """Close the HTTP client if this sender created it."""
        if self._owns_client:
            await self._client.aclose()


async def _read_limited(response: httpx.Response, limit: int) -> int:
    """Read at most ``limit`` bytes of the answer (the rest is dropped with the connection)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            break
    return read


def _classify(response: httpx.Response) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(True, False, f"answered {status}", status)
    if 300 <= status < 400:
        return Attempt(False, False, f"answered {status}: redirects are not followed", status)
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    return Attempt(False, retryable, f"answered {status}", status, _retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return float(value)
    except ValueError:
        return None
