"""A traffic generator: several prompts, versions and models calling a simulated provider.

Calls arrive as a Poisson process at ``rate`` per second and each runs as its own task, so
latencies overlap as they would in a service. Every call goes through the real profiler.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from promptprof import Profiler
from promptprof_tools.simulate import ModelProfile, SimulatedError, SimulatedProvider


@dataclass(frozen=True)
class Scenario:
    """One prompt version on one model, with its share of the traffic."""

    prompt_id: str
    version: str
    weight: float
    model: ModelProfile
    labels: dict[str, str] = field(default_factory=dict)


DEFAULT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("support-answer", "v3", 0.35, ModelProfile("gpt-4o-mini", latency_median_ms=700)),
    Scenario(
        "support-answer", "v4", 0.10,
        ModelProfile("gpt-4o-mini", latency_median_ms=650, output_tokens_mean=150,
                     quality_mean=0.84),
    ),
    Scenario(
        "summarize", "v1", 0.25,
        ModelProfile("claude-3-5-haiku-latest", provider="anthropic", latency_median_ms=900,
                     input_tokens_mean=1800, output_tokens_mean=220, error_rate=0.02),
    ),
    Scenario(
        "sql-gen", "v2", 0.15,
        ModelProfile("gpt-4o", latency_median_ms=1400, output_tokens_mean=90,
                     quality_mean=0.7, error_rate=0.03),
    ),
    Scenario(
        "classify", "v1", 0.15,
        ModelProfile("gpt-4o-mini", latency_median_ms=300, input_tokens_mean=250,
                     output_tokens_mean=5, ms_per_output_token=5, quality_mean=0.92),
    ),
)


@dataclass
class TrafficStats:
    """What the generator did, per (prompt, version, model)."""

    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    in_flight: int = 0


@dataclass
class Injection:
    """A change applied to one prompt from ``after_s`` seconds on (a regression to detect)."""

    prompt_id: str
    after_s: float
    latency_factor: float = 2.0


class TrafficGenerator:
    """Drives the scenarios through ``profiler`` for ``duration_s`` seconds."""

    def __init__(
        self, profiler: Profiler, *, rate: float = 200.0, seed: int = 7,
        scenarios: tuple[Scenario, ...] = DEFAULT_SCENARIOS, time_scale: float = 1.0,
        injection: Injection | None = None,
    ) -> None:
        self.profiler = profiler
        self.rate = rate
        self.rng = random.Random(seed)
        self.provider = SimulatedProvider(seed + 1, time_scale)
        self.scenarios = scenarios
        self.weights = [s.weight for s in scenarios]
        self.injection = injection
        self.stats = TrafficStats()
        self.elapsed_s = 0.0

    async def run(self, duration_s: float) -> TrafficStats:
        """Generate calls until ``duration_s`` has passed, then wait for those in flight."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        while (now := loop.time()) - start < duration_s:
            self.elapsed_s = now - start
            scenario = self.rng.choices(self.scenarios, self.weights)[0]
            task = asyncio.create_task(self._call(scenario))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(self.rng.expovariate(self.rate))
        if tasks:
            await asyncio.gather(*tasks)
        return self.stats

    def _model_for(self, scenario: Scenario) -> ModelProfile:
        inj = self.injection
        if inj and scenario.prompt_id == inj.prompt_id and self.elapsed_s >= inj.after_s:
            median = scenario.model.latency_median_ms * inj.latency_factor
            return replace(scenario.model, latency_median_ms=median)
        return scenario.model

    async def _call(self, scenario: Scenario) -> None:
        model = self._model_for(scenario)
        key = (scenario.prompt_id, scenario.version, model.model)
        self.stats.calls[key] += 1
        self.stats.in_flight += 1
        try:
            async with self.profiler.track(
                scenario.prompt_id, scenario.version, model=model.model,
                provider=model.provider, labels=scenario.labels,
            ) as call:
                await self.provider.complete(model, call)
        except SimulatedError:
            self.stats.errors[key] += 1
        finally:
            self.stats.in_flight -= 1
