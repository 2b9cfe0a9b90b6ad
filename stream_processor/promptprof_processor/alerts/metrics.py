"""The window figures that alert rules watch, by name, with the call count behind each.

A figure is taken from a closed :class:`~promptprof_processor.windows.figures.WindowAggregate`; it
is ``None`` when the window has no value for it (no TTFT measured, no token counts, ...).

The count is the number of *observed events* the figure rests on: it gates a rule's
``min_calls`` and sizes the noise of the figure. Under sampling an event recorded at
``sample_rate`` r stands for 1/r calls in the window's totals and rates, but it is still one
measurement: a window of 5 events sampled at 0.01 holds 5 latencies, not 500, and a window where
3 of its 40 events carry a TTFT judges its TTFT on 3. The window counts them exactly, per figure
(``observed_events``); a rate over all calls (the error rate) rests on every event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # not at run time: the rules and settings import this module, and stay light
    from promptprof_processor.windows.figures import WindowAggregate

MetricName = Literal[
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "error_rate",
    "tokens_per_call",
    "input_tokens_per_call",
    "output_tokens_per_call",
    "cost_per_call_usd",
    "quality_mean",
]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)


@dataclass(frozen=True, slots=True)
class Metric:
    """How to read one figure from a window, how many calls it rests on, how to print it."""

    name: str
    label: str
    value: Callable[[WindowAggregate], float | None]
    count: Callable[[WindowAggregate], float]  # observed events, not weighted calls
    unit: Literal["ms", "rate", "tokens", "usd", "score"]
    rate: bool = False  # a proportion of calls: its noise floor is binomial

    @property
    def multiplicative(self) -> bool:
        """Whether its noise scales with its level (durations, token counts, money), so that
        levels are compared on a log scale."""
        return self.unit in ("ms", "tokens", "usd")

    def format(self, value: float | None) -> str:
        """The value with its unit, for messages."""
        if value is None:
            return "n/a"
        return _FORMATS[self.unit](value)


_FORMATS: dict[str, Callable[[float], str]] = {
    "ms": lambda v: f"{v:,.0f} ms",
    "rate": lambda v: f"{v:.2%}",
    "tokens": lambda v: f"{v:,.0f} tokens",
    "usd": lambda v: f"${v:.6f}",
    "score": lambda v: f"{v:.3f}",
}


def _percentile(figures: str, q: str) -> Callable[[WindowAggregate], float | None]:
    """A reader of percentile ``q`` of the window's ``figures`` (``latency_ms``/``ttft_ms``)."""

    def read(w: WindowAggregate) -> float | None:
        found = getattr(w, figures)
        return None if found is None else float(getattr(found, q))

    return read


def _tokens_per_call(w: WindowAggregate) -> float | None:
    known = [t.mean for t in (w.input_tokens, w.output_tokens) if t is not None]
    return float(sum(known)) if known else None


def _observed(figure: str) -> Callable[[WindowAggregate], float]:
    """A reader of the events of the window that carried ``figure``."""

    def read(w: WindowAggregate) -> float:
        return float(w.observed_events.get(figure, 0))

    return read


def _token_calls(w: WindowAggregate) -> float:
    seen = w.observed_events
    return float(max(seen.get("input_tokens", 0), seen.get("output_tokens", 0)))


def _calls(w: WindowAggregate) -> float:
    return float(w.events)


_latencies = _observed("latency_ms")
_ttfts = _observed("ttft_ms")

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("latency_p50_ms", "latency p50", _percentile("latency_ms", "p50"), _latencies, "ms"),
        Metric("latency_p95_ms", "latency p95", _percentile("latency_ms", "p95"), _latencies, "ms"),
        Metric("latency_p99_ms", "latency p99", _percentile("latency_ms", "p99"), _latencies, "ms"),
        Metric("ttft_p95_ms", "TTFT p95", _percentile("ttft_ms", "p95"), _ttfts, "ms"),
        Metric("ttft_p99_ms", "TTFT p99", _percentile("ttft_ms", "p99"), _ttfts, "ms"),
        Metric("error_rate", "error rate", lambda w: w.error_rate, _calls, "rate", rate=True),
        Metric("tokens_per_call", "tokens per call", _tokens_per_call, _token_calls, "tokens"),
        Metric(
            "input_tokens_per_call", "input tokens per call",
            lambda w: None if w.input_tokens is None else w.input_tokens.mean,
            _observed("input_tokens"),
            "tokens",
        ),
        Metric(
            "output_tokens_per_call", "output tokens per call",
            lambda w: None if w.output_tokens is None else w.output_tokens.mean,
            _observed("output_tokens"),
            "tokens",
        ),
        Metric(
            "cost_per_call_usd", "cost per call", lambda w: w.cost_per_call_usd,
            _observed("cost_usd"), "usd",  # figures.COST_OBSERVED
        ),
        Metric(
            "quality_mean", "quality mean", lambda w: w.quality_mean,
            _observed("quality"), "score",
        ),
    )
}
