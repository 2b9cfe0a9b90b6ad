"""Seeded synthetic run files, to check the comparison's error rates (tests, ``bench/ci_compare``).

A tiny statistical model of a bench run, not a simulated LLM provider. The dataset (``items``
items, drawn from ``dataset_seed``) fixes each item's latency factor, input length, typical output
length and typical quality; both runs of a comparison share it, as two bench runs of one suite do.
Each call then draws, from the run's ``seed``: a lognormal latency around the item's, a TTFT as a
fraction of it, a gamma-Poisson output length around the item's, a Bernoulli error and a beta
quality score around the item's. Injected changes are fields of :class:`SyntheticProfile`;
:data:`SCENARIOS` are the changes the default thresholds must catch, each with the run size
(calls per run) at which it is claimed to be caught, and :data:`A_A` the no-change check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from promptprof_compare.order import OrderName, call_order
from promptprof_compare.runfile import CallRecord, RunFile, RunMetadata
from promptprof_compare.stats import CompareSettings, MetricName, compare_runs

STARTED_AT = datetime(2026, 1, 1, tzinfo=UTC)
QUALITY_CLIP = (0.01, 0.99)
DATASET_STREAM, CALLS_STREAM = 0, 1

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class SyntheticProfile:
    """Distribution parameters of one synthetic prompt configuration."""

    latency_median_ms: float = 900.0
    latency_item_sigma: float = 0.2
    latency_call_sigma: float = 0.4
    ttft_fraction: float = 0.3
    input_tokens_mean: float = 400.0
    output_tokens_mean: float = 150.0
    tokens_item_sigma: float = 0.4
    output_tokens_call_cv: float = 0.2
    error_rate: float = 0.01
    quality_mean: float = 0.8
    quality_item_concentration: float = 10.0
    quality_call_concentration: float = 20.0
    usd_per_input_token: float = 0.15e-6
    usd_per_output_token: float = 0.60e-6
    latency_factor: float = 1.0
    slow_fraction: float = 0.0
    slow_median_ms: float = 8000.0
    slow_sigma: float = 0.3
    bulk_latency_factor: float = 1.0
    output_tokens_factor: float = 1.0
    quality_shift: float = 0.0
    prompt_version: str = "v1"
    model: str = "synthetic-model"


@dataclass(frozen=True)
class _Dataset:
    """Per-item properties, shared by the runs of one comparison."""

    latency_factor: FloatArray
    input_tokens: IntArray
    output_tokens: FloatArray
    quality: FloatArray


@dataclass(frozen=True)
class _Draws:
    """Per-call draws of one run, calls ordered by item then repetition."""

    item: IntArray
    latency: FloatArray
    ttft: FloatArray
    output_tokens: IntArray
    failed: NDArray[np.bool_]
    quality: FloatArray


def _dataset(profile: SyntheticProfile, items: int, seed: int) -> _Dataset:
    rng = np.random.default_rng([seed, DATASET_STREAM])
    alpha = profile.quality_mean * profile.quality_item_concentration
    beta = (1 - profile.quality_mean) * profile.quality_item_concentration
    input_scale = rng.lognormal(0.0, profile.tokens_item_sigma, items)
    return _Dataset(
        latency_factor=rng.lognormal(0.0, profile.latency_item_sigma, items),
        input_tokens=np.round(profile.input_tokens_mean * input_scale).astype(np.int64),
        output_tokens=profile.output_tokens_mean
        * rng.lognormal(0.0, profile.tokens_item_sigma, items),
        quality=rng.beta(alpha, beta, items),
    )


def _draw(
    profile: SyntheticProfile,
    dataset: _Dataset,
    repetitions: int,
    rng: np.random.Generator,
    latency_scale: FloatArray | None,
) -> _Draws:
    item = np.repeat(np.arange(len(dataset.quality)), repetitions)
    count = len(item)
    latency = (
        profile.latency_median_ms
        * profile.latency_factor
        * dataset.latency_factor[item]
        * rng.lognormal(0.0, profile.latency_call_sigma, count)
    )
    latency = _with_slow_tail(profile, latency, rng) * (
        1.0 if latency_scale is None else latency_scale
    )
    ttft = np.minimum(latency, latency * profile.ttft_fraction * rng.lognormal(0.0, 0.1, count))
    shape = 1.0 / profile.output_tokens_call_cv**2
    expected_output = dataset.output_tokens[item] * profile.output_tokens_factor
    mean_quality = np.clip(dataset.quality[item] - profile.quality_shift, *QUALITY_CLIP)
    concentration = profile.quality_call_concentration
    return _Draws(
        item=item,
        latency=latency,
        ttft=ttft,
        output_tokens=rng.poisson(rng.gamma(shape, expected_output / shape)),
        failed=rng.random(count) < profile.error_rate,
        quality=rng.beta(mean_quality * concentration, (1 - mean_quality) * concentration),
    )


def _with_slow_tail(
    profile: SyntheticProfile, bulk: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """The bulk scaled by ``bulk_latency_factor``, a ``slow_fraction`` of calls slow instead.

    The slow calls (retries, long answers) come from their own lognormal, untouched by the bulk
    factor. Nothing is drawn when there are none, so other profiles keep their draws.
    """
    if profile.slow_fraction == 0:
        return bulk * profile.bulk_latency_factor
    slow = rng.random(len(bulk)) < profile.slow_fraction
    tail = profile.slow_median_ms * rng.lognormal(0.0, profile.slow_sigma, len(bulk))
    return np.where(slow, tail, bulk * profile.bulk_latency_factor)


def synthetic_run(
    profile: SyntheticProfile,
    *,
    items: int,
    repetitions: int,
    seed: int,
    dataset_seed: int = 0,
    prompt_id: str = "synthetic",
    latency_scale: FloatArray | None = None,
) -> RunFile:
    """A run of one prompt over ``items`` dataset items, each called ``repetitions`` times.

    ``latency_scale`` multiplies each call's latency and TTFT (calls ordered by item, then
    repetition), for a provider whose speed drifts during the run.
    """
    dataset = _dataset(profile, items, dataset_seed)
    rng = np.random.default_rng([seed, CALLS_STREAM])
    draws = _draw(profile, dataset, repetitions, rng, latency_scale)
    records = [
        _record(profile, prompt_id, dataset, draws, index, repetitions)
        for index in range(len(draws.item))
    ]
    metadata = RunMetadata(
        suite="synthetic", started_at=STARTED_AT, provider="synthetic", seed=seed
    )
    return RunFile(run=metadata, prompts={prompt_id: records})


def _record(
    profile: SyntheticProfile,
    prompt_id: str,
    dataset: _Dataset,
    draws: _Draws,
    index: int,
    repetitions: int,
) -> CallRecord:
    item = int(draws.item[index])
    failed = bool(draws.failed[index])
    input_tokens = int(dataset.input_tokens[item])
    output_tokens = 0 if failed else int(draws.output_tokens[index])
    cost = input_tokens * profile.usd_per_input_token + output_tokens * profile.usd_per_output_token
    return CallRecord(
        item_id=f"item-{item}",
        repetition=index % repetitions,
        prompt_id=prompt_id,
        prompt_version=profile.prompt_version,
        model=profile.model,
        latency_ms=float(draws.latency[index]),
        ttft_ms=None if failed else float(draws.ttft[index]),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=None if failed else cost,
        status="error" if failed else "ok",
        error_type="rate_limit" if failed else None,
        quality_score=None if failed else float(draws.quality[index]),
        quality_metric=None if failed else "judge",
    )


FAMILY_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Drift:
    """Provider latency growing linearly by ``total`` (0.3: +30 %) from a run's first call to
    its last, the base and candidate calls made in the ``order`` ``promptprof ci`` uses."""

    total: float
    order: OrderName


def _drift_scales(
    drift: Drift, keys: list[tuple[int, int, int]], trial: int
) -> tuple[FloatArray, FloatArray]:
    """Each base and candidate call's latency factor at its place in the ci order."""
    order = call_order(drift.order, keys, keys, trial)
    scales = np.empty((2, len(keys)))
    steps = max(len(order) - 1, 1)
    for position, (side, index) in enumerate(order):
        scales[side, index] = 1.0 + drift.total * position / steps
    return scales[0], scales[1]


def synthetic_pair(
    base: SyntheticProfile,
    candidate: SyntheticProfile,
    *,
    items: int,
    repetitions: int,
    trial: int,
    prompts: int = 1,
    drift: Drift | None = None,
) -> tuple[RunFile, RunFile]:
    """Base and candidate runs of trial number ``trial``: per prompt one dataset, two seeds.

    With ``prompts`` > 1 each prompt (``synthetic-0``, ...) has its own dataset and draws; with
    ``drift`` every call's latency grows with its place in the order both runs are made in.
    """
    keys = [(k, i, r) for k in range(prompts) for i in range(items) for r in range(repetitions)]
    scales = _drift_scales(drift, keys, trial) if drift else (None, None)
    per_prompt = items * repetitions
    runs = []
    for side, profile in enumerate((base, candidate)):
        records = {}
        for k in range(prompts):
            prompt_id = "synthetic" if prompts == 1 else f"synthetic-{k}"
            scale = scales[side]
            run = synthetic_run(
                profile,
                items=items,
                repetitions=repetitions,
                seed=2 * trial + 1 + side + k * FAMILY_SEED_STRIDE,
                dataset_seed=trial + k * FAMILY_SEED_STRIDE,
                prompt_id=prompt_id,
                latency_scale=None
                if scale is None
                else scale[k * per_prompt : (k + 1) * per_prompt],
            )
            records.update(run.prompts)
        runs.append(RunFile(run=run.run, prompts=records))
    return runs[0], runs[1]


@dataclass(frozen=True)
class Scenario:
    """An injected change (or none), the metrics that should catch it and the run size claimed.

    ``base`` is the base run's profile, ``prompts`` how many prompts one comparison holds, and
    ``drift`` a provider drift over the run.
    """

    name: str
    candidate: SyntheticProfile
    catches: frozenset[MetricName]
    items: int
    repetitions: int
    base: SyntheticProfile | None = None
    prompts: int = 1
    drift: Drift | None = None

    @property
    def calls(self) -> int:
        """Calls per run and prompt at the claimed size."""
        return self.items * self.repetitions


BASE_PROFILE = SyntheticProfile()
LATENCY_METRICS: frozenset[MetricName] = frozenset({"latency_p50", "latency_p95", "latency_p99"})
A_A = Scenario("a_a", BASE_PROFILE, frozenset(), items=40, repetitions=3)
SCENARIOS = (
    Scenario("latency_30pct", replace(BASE_PROFILE, latency_factor=1.3), LATENCY_METRICS, 60, 4),
    Scenario(
        "tokens_20pct",
        replace(BASE_PROFILE, output_tokens_factor=1.2),
        frozenset({"output_tokens"}),
        60,
        4,
    ),
    Scenario(
        "errors_1_to_5pct",
        replace(BASE_PROFILE, error_rate=0.05),
        frozenset({"error_rate"}),
        200,
        5,
    ),
    Scenario(
        "quality_drop",
        replace(BASE_PROFILE, quality_shift=0.1),
        frozenset({"quality"}),
        40,
        3,
    ),
)


SLOW_TAIL_PROFILE = replace(BASE_PROFILE, slow_fraction=0.03)
"""3 % of calls slow (median 8 s) beside a bulk of median 900 ms: p99 lies in the slow calls."""
MIXED_SHIFT = Scenario(
    "mixed_shift",
    replace(SLOW_TAIL_PROFILE, bulk_latency_factor=0.8),
    frozenset(),
    items=200,
    repetitions=5,
    base=SLOW_TAIL_PROFILE,
)
"""The bulk 20 % faster, the slow calls unchanged: an improvement of p50, no change of p99."""
PROVIDER_DRIFT = 0.3
DRIFT = Scenario("drift", BASE_PROFILE, frozenset(), 40, 3, drift=Drift(PROVIDER_DRIFT, "blocked"))
"""A/A while the provider gets 30 % slower over the run, calls in ``promptprof ci``'s order."""
DRIFT_SEQUENTIAL = replace(
    DRIFT, name="drift_sequential", drift=Drift(PROVIDER_DRIFT, "sequential")
)
"""The same drift with every base call made before every candidate call (the old order)."""
FAMILY = Scenario("family_10_prompts", BASE_PROFILE, frozenset(), 40, 3, prompts=10)
"""A/A over ten prompts compared in one run: one family of tests."""
NO_CHANGE_SCENARIOS = (A_A, MIXED_SHIFT, DRIFT, DRIFT_SEQUENTIAL, FAMILY)


def flagged(
    scenario: Scenario,
    trial: int,
    *,
    items: int | None = None,
    repetitions: int | None = None,
    settings: CompareSettings | None = None,
) -> bool:
    """Whether trial ``trial`` of the scenario reports its change as a regression.

    For the A/A scenario (``catches`` empty) this is whether any metric regressed, a false alarm.
    """
    base, candidate = synthetic_pair(
        scenario.base or BASE_PROFILE,
        scenario.candidate,
        items=items or scenario.items,
        repetitions=repetitions or scenario.repetitions,
        trial=trial,
        prompts=scenario.prompts,
        drift=scenario.drift,
    )
    regressed = {
        metric.metric for _, metric in compare_runs(base, candidate, settings).regressions()
    }
    return bool(regressed & scenario.catches) if scenario.catches else bool(regressed)
