"""Seeded synthetic windows of one series, with injected changes, for tests, demos and the bench.

Each window draws its calls one by one (count ~ normal(calls, sqrt(calls))): log-normal
latencies around a median that a per-window *load* factor also moves (shared by every call of
the window, as a busy provider would), TTFT as a share of each latency, independent errors,
log-normal input and output tokens, the cost that follows from the tokens, and quality scores.
The window's figures are then computed as the processor computes them (percentiles at rank
floor(q * (n - 1)), means over the calls). Sketches are left out.

Realistic traffic options: ``load_rho`` makes the load factor AR(1) from window to window
(``load_sigma`` stays its marginal standard deviation); ``daily_swing`` scales the calls and the
latency median by ``1 + daily_swing * sin(2 pi t / 24 h)``; ``sample_rate`` records each call with
that probability, as a sampling producer does: the figures come from the recorded events only,
``events`` counts them and the call, error, token, cost and quality counts are weighted by
1/sample_rate, ``observed_events`` counts the recorded events (a window where nothing was
recorded is left out).

A :class:`Change` multiplies latencies or tokens, or sets the error rate, from a window index
on (and optionally back to normal later).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import (
    COST_OBSERVED,
    ERRORS_OBSERVED,
    SKETCHED,
    Percentiles,
    SeriesTags,
    TokenStats,
    WindowAggregate,
)

T0_NS = 1_700_000_040 * NS_PER_S  # aligned to 60 s
DEFAULT_SERIES = SeriesTags(
    service="synthetic", prompt_id="summarise", prompt_version="v1", model="gpt-4o-mini"
)


@dataclass(frozen=True)
class Traffic:
    """Stationary traffic of one series."""

    calls: float = 200.0
    latency_median_ms: float = 700.0
    latency_sigma: float = 0.5
    load_sigma: float = 0.05
    ttft_share: float = 0.3
    error_rate: float = 0.01
    input_tokens: float = 800.0
    output_tokens: float = 150.0
    tokens_sigma: float = 0.4
    usd_per_1k_input: float = 0.00015
    usd_per_1k_output: float = 0.0006
    quality_mean: float = 0.8
    load_rho: float = 0.0
    daily_swing: float = 0.0
    sample_rate: float = 1.0


@dataclass(frozen=True)
class Change:
    """A change of the traffic over windows ``start`` (inclusive) to ``end`` (exclusive)."""

    start: int
    end: int | None = None
    latency_factor: float = 1.0
    error_rate: float | None = None
    tokens_factor: float = 1.0

    def active(self, index: int) -> bool:
        """Whether window ``index`` is changed."""
        return self.start <= index and (self.end is None or index < self.end)

    def apply(self, traffic: Traffic) -> Traffic:
        """The traffic under this change."""
        return replace(
            traffic,
            latency_median_ms=traffic.latency_median_ms * self.latency_factor,
            error_rate=traffic.error_rate if self.error_rate is None else self.error_rate,
            input_tokens=traffic.input_tokens * self.tokens_factor,
            output_tokens=traffic.output_tokens * self.tokens_factor,
        )


def synthetic_windows(
    count: int, *, seed: int, traffic: Traffic | None = None, changes: Sequence[Change] = (),
    series: SeriesTags = DEFAULT_SERIES, width_s: int = 60, start_ns: int = T0_NS,
    first_index: int = 0,
) -> list[WindowAggregate]:
    """``count`` consecutive windows (indices ``first_index``...) of one series."""
    rng = random.Random(seed)
    base = traffic or Traffic()
    out = []
    load = 0.0
    for index in range(first_index, first_index + count):
        now = _swung(base, index * width_s)
        for change in changes:
            if change.active(index):
                now = change.apply(now)
        begin = start_ns + index * width_s * NS_PER_S
        window, load = _window(rng, now, series, begin, width_s, load)
        if window is not None:
            out.append(window)
    return out


def _swung(traffic: Traffic, at_s: int) -> Traffic:
    """The traffic at ``at_s`` seconds into the day, under its daily swing."""
    if not traffic.daily_swing:
        return traffic
    factor = 1.0 + traffic.daily_swing * math.sin(2 * math.pi * at_s / 86_400)
    return replace(
        traffic, calls=traffic.calls * factor,
        latency_median_ms=traffic.latency_median_ms * factor,
    )


def _window(
    rng: random.Random, t: Traffic, series: SeriesTags, start_ns: int, width_s: int,
    previous_load: float,
) -> tuple[WindowAggregate | None, float]:
    """One window (None when sampling recorded nothing) and its load factor (log scale)."""
    calls = max(1, round(rng.gauss(t.calls, math.sqrt(t.calls))))
    innovation = math.sqrt(1.0 - t.load_rho**2)
    load = t.load_rho * previous_load + innovation * rng.gauss(0.0, t.load_sigma)
    n = calls if t.sample_rate >= 1.0 else sum(rng.random() < t.sample_rate for _ in range(calls))
    if n == 0:
        return None, load
    weight = 1.0 / t.sample_rate
    mu = math.log(t.latency_median_ms) + load
    latency = sorted(rng.lognormvariate(mu, t.latency_sigma) for _ in range(n))
    ttft = sorted(v * t.ttft_share * rng.uniform(0.7, 1.3) for v in latency)
    errors = float(sum(rng.random() < t.error_rate for _ in range(n)))
    inputs = _lognormal_mean(rng, t.input_tokens, t.tokens_sigma, n)
    outputs = _lognormal_mean(rng, t.output_tokens, t.tokens_sigma, n)
    cost = (math.fsum(inputs) * t.usd_per_1k_input + math.fsum(outputs) * t.usd_per_1k_output)
    cost /= 1000.0
    quality = math.fsum(min(1.0, max(0.0, rng.gauss(t.quality_mean, 0.1))) for _ in range(n)) / n
    weighted = n * weight
    return WindowAggregate(
        window_start_ns=start_ns, window_end_ns=start_ns + width_s * NS_PER_S, width_s=width_s,
        series=series, events=n, calls=weighted, errors=errors * weight, error_rate=errors / n,
        errors_by_type={"server_error": errors * weight} if errors else {},
        latency_ms=_percentiles(latency), ttft_ms=_percentiles(ttft), ttft_calls=weighted,
        input_tokens=_tokens(inputs, weight), output_tokens=_tokens(outputs, weight),
        cost_usd_sum=cost * weight, cost_per_call_usd=cost / n, cost_known_calls=weighted,
        cost_unknown_calls=0.0, quality_mean=quality, quality_p10=None, quality_scored=weighted,
        late_events=0, sketches={}, observed_events=_observed(n, int(errors)),
    ), load


def _observed(events: int, errors: int) -> dict[str, int]:
    """Every recorded event carries every figure."""
    seen = dict.fromkeys((*SKETCHED, COST_OBSERVED), events)
    return seen | ({ERRORS_OBSERVED: errors} if errors else {})


def _lognormal_mean(rng: random.Random, mean: float, sigma: float, n: int) -> list[float]:
    mu = math.log(mean) - sigma * sigma / 2
    return [round(rng.lognormvariate(mu, sigma)) for _ in range(n)]


def _rank(ordered: Sequence[float], q: float) -> float:
    return ordered[math.floor(q * (len(ordered) - 1))]


def _percentiles(ordered: Sequence[float]) -> Percentiles:
    return Percentiles(
        p50=_rank(ordered, 0.5), p90=_rank(ordered, 0.9), p95=_rank(ordered, 0.95),
        p99=_rank(ordered, 0.99), max=ordered[-1],
    )


def _tokens(values: list[float], weight: float) -> TokenStats:
    total = math.fsum(values)
    return TokenStats(
        sum=total * weight, mean=total / len(values), p95=_rank(sorted(values), 0.95),
        calls=len(values) * weight,
    )
