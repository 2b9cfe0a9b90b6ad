"""Storm grouping and rate limits of one receiver: alerts in, few notifications out.

A provider outage makes every series of that provider fire at once. As Alertmanager does, the
alerts a receiver gets are grouped by their values of ``group_by`` (default ``service`` and
``model``; any of ``service``, ``prompt_id``, ``prompt_version``, ``model``, ``rule``, ``kind``,
``metric``, ``severity``, ``fingerprint``, or ``label:<name>``) and their state (firing,
resolved and accepted events never share a notification):

- the first alert of a new group waits ``group_wait_s``, so the rest of the storm joins it;
  then the group goes out as one :class:`Notification` listing every alert (up to
  ``max_alerts`` per notification: a bigger group goes out in several, nothing is cut);
- alerts that join a group already notified wait until ``group_interval_s`` after its last
  notification; a group with nothing new for a whole interval is forgotten.

Each receiver sends under its own rate limit (:class:`Limiter`: at most ``max_per_s``
notifications per second, one per second for Slack by default) and a ``Retry-After`` answer
holds back all its sends for that long. Nothing is dropped: what waits (alerts in groups, and
notifications not yet sent) is counted (:attr:`Grouper.waiting`).

:class:`Grouper` is pure (time is passed in), so the grouping is tested on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from promptprof_processor.alerts.events import Alert, State
from promptprof_processor.alerts.settings import GroupingSettings


@dataclass(frozen=True)
class Notification:
    """What one request to a receiver carries: the alerts of one group, in arrival order."""

    group_key: str
    group_labels: dict[str, str]
    state: State
    alerts: tuple[Alert, ...]

    @property
    def notification_id(self) -> str:
        """The idempotency key: the alert's id for one alert, a digest of the ids otherwise."""
        if len(self.alerts) == 1:
            return self.alerts[0].alert_id
        ids = "\n".join(sorted(a.alert_id for a in self.alerts))
        return hashlib.sha256(ids.encode()).hexdigest()[:32]


def group_labels(alert: Alert, group_by: list[str]) -> dict[str, str]:
    """The alert's values of the ``group_by`` keys (an absent label is empty)."""
    series = alert.series
    fields = {
        "service": series.service, "prompt_id": series.prompt_id,
        "prompt_version": series.prompt_version, "model": series.model, "rule": alert.rule,
        "kind": alert.kind, "metric": alert.metric, "severity": alert.severity,
        "fingerprint": alert.fingerprint,
    }
    return {
        key: series.labels.get(key[6:], "") if key.startswith("label:") else fields[key]
        for key in group_by
    }


@dataclass
class _Group:
    labels: dict[str, str]
    state: State
    due: float
    pending: list[Alert] = field(default_factory=list)
    flushed_at: float | None = None


class Grouper:
    """The groups of one receiver, and when each is due (pure: ``now`` is passed in)."""

    def __init__(self, settings: GroupingSettings) -> None:
        """Groups following ``settings``."""
        self.settings = settings
        self._groups: dict[str, _Group] = {}

    def add(self, alert: Alert, now: float) -> None:
        """Put an alert in its group (a new group is due after ``group_wait_s``)."""
        labels = group_labels(alert, self.settings.group_by)
        key = "\x1f".join([alert.state, *labels.values()])
        group = self._groups.get(key)
        if group is None:
            due = now + self.settings.group_wait_s
            group = self._groups[key] = _Group(labels, alert.state, due)
        elif not group.pending and group.flushed_at is not None:
            group.due = group.flushed_at + self.settings.group_interval_s
        group.pending.append(alert)

    def due(self, now: float) -> list[Notification]:
        """The notifications of every group whose time has come (all of them when ``now`` is
        infinite, as at shutdown); groups idle for an interval are forgotten."""
        out: list[Notification] = []
        for key, group in list(self._groups.items()):
            if group.pending and group.due <= now:
                out += self._flush(key, group, now)
            elif not group.pending and group.flushed_at is not None and (
                now - group.flushed_at >= self.settings.group_interval_s
            ):
                del self._groups[key]
        return out

    def _flush(self, key: str, group: _Group, now: float) -> list[Notification]:
        size = self.settings.max_alerts
        pending, group.pending = group.pending, []
        group.flushed_at = now
        group.due = now + self.settings.group_interval_s
        return [
            Notification(key, dict(group.labels), group.state, tuple(pending[i:i + size]))
            for i in range(0, len(pending), size)
        ]

    def next_due(self) -> float | None:
        """When the next group with pending alerts is due (None: none pending)."""
        return min((g.due for g in self._groups.values() if g.pending), default=None)

    @property
    def waiting(self) -> int:
        """Alerts held in groups."""
        return sum(len(g.pending) for g in self._groups.values())


class Limiter:
    """At most ``per_s`` sends per second, and none before a ``Retry-After`` has passed."""

    def __init__(
        self, per_s: float, *, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """A limiter of ``per_s`` sends per second (time from ``clock``, waits by ``sleep``)."""
        self.interval = 1.0 / per_s
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = asyncio.Lock()
        self.waits = 0  # sends that had to wait for their turn

    async def acquire(self) -> None:
        """Wait for the next free slot and take it."""
        async with self._lock:
            delay = self._next - self._clock()
            if delay > 0:
                self.waits += 1
                await self._sleep(delay)
            self._next = max(self._next, self._clock()) + self.interval

    def defer(self, seconds: float) -> None:
        """Send nothing more for ``seconds`` (a ``Retry-After`` answer)."""
        self._next = max(self._next, self._clock() + seconds)
