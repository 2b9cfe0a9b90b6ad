"""Fixtures of the alert tests: sample alerts and local webhook receivers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from promptprof_processor.alerts import Alert, AlertEngine, WebhookReceiver, parse_rules
from promptprof_processor.alerts.synthetic import DEFAULT_SERIES, Change, synthetic_windows

SECRET = "s3cr3t-hmac-key-for-tests"


def sample_alerts(seed: int = 21, prompt_id: str = "summarise", **rules: Any) -> list[Alert]:
    """Real alerts from the engine: a latency jump that fires, then resolves."""
    series = DEFAULT_SERIES.model_copy(update={"prompt_id": prompt_id})
    windows = synthetic_windows(
        90, seed=seed, series=series,
        changes=[Change(60, 70, latency_factor=2.0, error_rate=0.2)],
    )
    engine = AlertEngine(parse_rules({"defaults": rules} if rules else {}))
    alerts = engine.observe(windows)
    assert {a.state for a in alerts} == {"firing", "resolved"}
    return alerts


@pytest.fixture
def alerts() -> list[Alert]:
    """A few firing and resolved alerts."""
    return sample_alerts()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., WebhookReceiver]]:
    """Start webhook receivers on free loopback ports; all are stopped at the end."""
    started: list[WebhookReceiver] = []

    def make(secret: str | None = SECRET) -> WebhookReceiver:
        receiver = WebhookReceiver(secret).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


class RecordingLog:
    """Stands in for a module's structlog logger and keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.calls.append((level, event, fields))

        return record

    def text(self) -> str:
        """Everything logged, as one string."""
        return "\n".join(f"{lvl} {event} {fields!r}" for lvl, event, fields in self.calls)

    def events(self) -> list[str]:
        """The event names logged."""
        return [event for _, event, _ in self.calls]
