"""Test doubles for the sink: an InfluxDB that refuses some points, a dead-letter recorder, and
windows to write."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from promptprof_processor.settings import NS_PER_S
from promptprof_processor.sink.influx import InfluxWriteError
from promptprof_processor.windows.figures import Accumulator, SeriesTags, WindowAggregate
from tests.processor.factories import T0, add_calls, call


@dataclass
class FakeInflux:
    """A :class:`~promptprof_processor.sink.influx.LineWriter` that behaves as InfluxDB 1.x on
    a request holding a refused point: it stores the other points (a partial write) and answers
    ``refuse_status`` with the first refused line quoted. A line is refused when it contains
    ``poison``. ``outages`` first requests fail with a retryable 503; a ``deny_status`` answers
    every request with that status (bad credentials, unknown database)."""

    poison: str = "poison"
    refuse_status: int = 400
    outages: int = 0
    deny_status: int | None = None
    stored: Counter[str] = field(default_factory=Counter)
    requests: int = 0

    async def write(self, lines: list[str]) -> None:
        """Store the good lines; raise like InfluxDB for the rest."""
        self.requests += 1
        if self.outages:
            self.outages -= 1
            raise InfluxWriteError("influxdb answered 503", retryable=True, status=503)
        if self.deny_status is not None:
            raise InfluxWriteError("denied", retryable=False, status=self.deny_status)
        refused = [line for line in lines if self.poison in line]
        self.stored.update(line for line in lines if self.poison not in line)
        if refused:
            reason = f"partial write: unable to parse '{refused[0]}': invalid"
            raise InfluxWriteError(
                f"influxdb answered {self.refuse_status}: {reason}", retryable=False,
                status=self.refuse_status, reason=reason,
            )

    async def close(self) -> None:
        """Nothing to release."""


@dataclass
class DeadLetters:
    """Records what the sink sends to the dead-letter topic."""

    sent: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def send_and_wait(
        self, topic: str, value: bytes, *, headers: list[tuple[str, bytes]]
    ) -> Any:
        """Record one dead letter."""
        self.sent.append((topic, value, {k: v.decode() for k, v in headers}))


def window(
    prompt_id: str = "summarise", *, error_types: tuple[str, ...] = (), start_s: int = 0,
    labels: dict[str, str] | None = None, service: str = "svc", version: str = "v1",
    model: str = "gpt-4o-mini",
) -> WindowAggregate:
    """A closed 10 s window of two calls (plus one failed call per error type)."""
    acc = Accumulator()
    calls = [call(latency_ms=100), call(latency_ms=200)]
    calls += [call(status="error", error_type=e) for e in error_types]
    add_calls(acc, calls)
    tags = SeriesTags(
        service=service, prompt_id=prompt_id, prompt_version=version, model=model,
        labels=labels or {},
    )
    start = T0 + start_s * NS_PER_S
    return acc.finish(tags, start, start + 10 * NS_PER_S, late_events=0)
