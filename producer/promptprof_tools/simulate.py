"""A simulated LLM provider: seeded latency, token, error and quality distributions.

Used by the demo's traffic generator and by offline benchmark suites. Every knob that a
regression test needs (slower, wordier, more errors, worse answers) is a field of
:class:`ModelProfile`, so an injected change is one ``dataclasses.replace`` away.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

from promptprof import Call


class SimulatedError(Exception):
    """Base of the errors the simulated provider raises."""


class SimulatedRateLimit(SimulatedError):
    """The simulated provider's HTTP 429."""


class SimulatedTimeout(SimulatedError):
    """The simulated provider's request timeout."""


class SimulatedServerError(SimulatedError):
    """The simulated provider's HTTP 500."""


_ERRORS: tuple[type[SimulatedError], ...] = (
    SimulatedRateLimit, SimulatedTimeout, SimulatedServerError,
)


@dataclass(frozen=True)
class ModelProfile:
    """How one simulated model behaves. Latencies in ms, lognormal around the medians."""

    model: str
    provider: str = "openai"
    latency_median_ms: float = 800.0
    latency_sigma: float = 0.35
    ttft_fraction: float = 0.25
    ms_per_output_token: float = 8.0
    input_tokens_mean: float = 400.0
    output_tokens_mean: float = 120.0
    error_rate: float = 0.01
    quality_mean: float = 0.8
    quality_concentration: float = 20.0


@dataclass(frozen=True)
class Completion:
    """What the simulated provider returns."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    ttft_ms: float
    quality: float


class SimulatedProvider:
    """Draws completions from a :class:`ModelProfile` with a seeded random generator.

    ``time_scale`` multiplies the simulated waits: 1.0 sleeps the real latency, 0.0 does not
    sleep at all (the drawn latency is still returned).
    """

    def __init__(self, seed: int = 0, time_scale: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.time_scale = time_scale

    def draw(self, profile: ModelProfile) -> Completion:
        """One completion, or raise one of the simulated errors."""
        rng = self.rng
        if rng.random() < profile.error_rate:
            raise rng.choice(_ERRORS)(f"simulated failure of {profile.model}")
        inp = max(1, round(rng.gauss(profile.input_tokens_mean, profile.input_tokens_mean * 0.15)))
        out = max(1, round(rng.expovariate(1 / profile.output_tokens_mean)))
        base = profile.latency_median_ms * math.exp(rng.gauss(0, profile.latency_sigma))
        latency = base + out * profile.ms_per_output_token
        conc = profile.quality_concentration
        quality = rng.betavariate(profile.quality_mean * conc, (1 - profile.quality_mean) * conc)
        return Completion(
            text=f"simulated answer of {out} tokens", model=profile.model, input_tokens=inp,
            output_tokens=out, latency_ms=latency, ttft_ms=base * profile.ttft_fraction,
            quality=quality,
        )

    async def complete(self, profile: ModelProfile, call: Call | None = None) -> Completion:
        """Simulate one streamed call, marking TTFT and usage on ``call`` when given."""
        try:
            completion = self.draw(profile)
        except SimulatedError:
            await asyncio.sleep(profile.latency_median_ms * 0.2 * self.time_scale / 1000)
            raise
        await asyncio.sleep(completion.ttft_ms * self.time_scale / 1000)
        if call is not None:
            call.first_token()
        await asyncio.sleep((completion.latency_ms - completion.ttft_ms) * self.time_scale / 1000)
        if call is not None:
            _fill(call, completion)
        return completion

    def complete_sync(self, profile: ModelProfile, call: Call | None = None) -> Completion:
        """The blocking twin of :meth:`complete`."""
        try:
            completion = self.draw(profile)
        except SimulatedError:
            time.sleep(profile.latency_median_ms * 0.2 * self.time_scale / 1000)
            raise
        time.sleep(completion.ttft_ms * self.time_scale / 1000)
        if call is not None:
            call.first_token()
        time.sleep((completion.latency_ms - completion.ttft_ms) * self.time_scale / 1000)
        if call is not None:
            _fill(call, completion)
        return completion


def _fill(call: Call, completion: Completion) -> None:
    call.set_usage(completion.input_tokens, completion.output_tokens)
    call.set_model(completion.model)
    call.score(round(completion.quality, 4), "simulated")
