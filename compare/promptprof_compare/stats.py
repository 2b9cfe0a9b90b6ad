"""Compare two runs prompt by prompt and decide, per metric, regression, improvement or no change.

Statistical choices (per prompt present in both runs):

* Latency and TTFT (successful calls): p50, p95 and p99. The test is a two-sided Mann-Whitney U
  test of the whole distribution (one test shared by the three quantiles); the interval is a
  percentile bootstrap of the relative difference of each quantile, both runs resampled
  independently.
* Input tokens, output tokens and cost per successful call: the mean, with a two-sided
  Mann-Whitney U test and a bootstrap interval of the relative difference of the means. The
  monthly cost is the mean cost per call times the configured monthly volume.
* Error rate (all calls): Fisher's exact test, or the pooled two-proportion z-test (the
  chi-square test without continuity correction) when every expected cell count is at least 10;
  the interval is a bootstrap of the difference in percentage points.
* Quality: paired by dataset item. Each item's score is the mean over its repetitions; the test is
  the Wilcoxon signed-rank test over the items present in both runs, the interval a bootstrap of
  the mean paired difference (absolute).

Multiple testing: the tests of one prompt (up to seven: latency, TTFT, input tokens, output
tokens, cost, errors, quality) form one family, corrected with Holm's step-down method, which
controls the family-wise error rate at ``alpha`` under any dependence between the tests and is
never less powerful than Bonferroni (Bonferroni is available as an option). The three quantiles
of one distribution share their test's corrected p-value.

Verdict: a metric is a regression only when its test is significant (corrected p < ``alpha``,
default 0.01) and its point estimate moved in the worse direction by more than both the
relative and the absolute threshold; an improvement likewise in the better direction; otherwise
no change. The relative threshold r is applied to the ratio candidate/base: worse means a ratio
beyond 1 + r, better a ratio beyond 1 / (1 + r), so that swapping the two runs swaps regression
and improvement exactly. Intervals are at the level 1 - ``alpha``; they inform, they do not
decide. Thresholds apply to point estimates: p95 and p99 of a few hundred calls are noisy, so when
a whole distribution moved by less than its threshold, a tail quantile can still overshoot it and
be flagged; raise those thresholds in the file if that is a nuisance.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats
from scipy.stats.contingency import expected_freq

from promptprof_compare.runfile import CallRecord, RunFile, RunMetadata, describe_errors

MetricName = Literal[
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "ttft_p50",
    "ttft_p95",
    "ttft_p99",
    "input_tokens",
    "output_tokens",
    "cost_per_call",
    "error_rate",
    "quality",
]
METRIC_NAMES: tuple[MetricName, ...] = get_args(MetricName)
Direction = Literal["lower_is_better", "higher_is_better"]
Verdict = Literal["regression", "improvement", "no_change"]
IntervalKind = Literal["relative", "absolute"]

MIN_CALLS = 2
MIN_ITEMS = 2
MIN_EXPECTED_FOR_Z_TEST = 10.0
QUANTILES = (0.5, 0.95, 0.99)
QUANTILE_METRICS: dict[str, tuple[MetricName, MetricName, MetricName]] = {
    "latency": ("latency_p50", "latency_p95", "latency_p99"),
    "ttft": ("ttft_p50", "ttft_p95", "ttft_p99"),
}
BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000
COMPARISON_SCHEMA_VERSION: Final = 1

FloatArray = NDArray[np.float64]
NonNegInt = Annotated[int, Field(ge=0)]


class ThresholdsError(Exception):
    """A thresholds file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class CompareError(Exception):
    """Two runs that cannot be compared (for example, no prompt in common)."""


class Threshold(BaseModel):
    """How far a metric must move to count: ``relative`` as a fraction, ``absolute`` in its unit."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    relative: float = Field(ge=0)
    absolute: float = Field(ge=0)


class ThresholdOverride(BaseModel):
    """A partial :class:`Threshold` from a thresholds file; missing fields keep the default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    relative: float | None = Field(default=None, ge=0)
    absolute: float | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown and judged."""

    label: str
    unit: str
    direction: Direction
    default: Threshold


def _info(
    label: str, unit: str, direction: Direction, relative: float, absolute: float
) -> MetricInfo:
    return MetricInfo(label, unit, direction, Threshold(relative=relative, absolute=absolute))


METRICS: dict[MetricName, MetricInfo] = {
    "latency_p50": _info("latency p50", "ms", "lower_is_better", 0.10, 50.0),
    "latency_p95": _info("latency p95", "ms", "lower_is_better", 0.10, 50.0),
    "latency_p99": _info("latency p99", "ms", "lower_is_better", 0.10, 50.0),
    "ttft_p50": _info("TTFT p50", "ms", "lower_is_better", 0.10, 50.0),
    "ttft_p95": _info("TTFT p95", "ms", "lower_is_better", 0.10, 50.0),
    "ttft_p99": _info("TTFT p99", "ms", "lower_is_better", 0.10, 50.0),
    "input_tokens": _info("input tokens per call", "tokens", "lower_is_better", 0.10, 5.0),
    "output_tokens": _info("output tokens per call", "tokens", "lower_is_better", 0.10, 5.0),
    "cost_per_call": _info("cost per call", "USD", "lower_is_better", 0.10, 0.0),
    "error_rate": _info("error rate", "fraction", "lower_is_better", 0.0, 0.02),
    "quality": _info("quality", "score", "higher_is_better", 0.0, 0.05),
}


class PromptSettings(BaseModel):
    """Per-prompt overrides in a thresholds file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    monthly_volume: NonNegInt | None = None
    metrics: dict[MetricName, ThresholdOverride] = Field(default_factory=dict)


class CompareSettings(BaseModel):
    """Significance level, correction, bootstrap and thresholds (the ``--thresholds`` YAML file).

    Example file::

        alpha: 0.01
        correction: holm          # or bonferroni
        monthly_volume: 1000000   # calls per month and prompt, for the monthly cost
        metrics:
          latency_p95: {relative: 0.15, absolute: 100}
        prompts:
          summarize:
            monthly_volume: 50000
            metrics:
              quality: {absolute: 0.02}
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    alpha: float = Field(default=0.01, gt=0, lt=1)
    correction: Literal["holm", "bonferroni"] = "holm"
    n_resamples: int = Field(default=2000, ge=100, le=100_000)
    seed: int = 0
    monthly_volume: NonNegInt | None = None
    metrics: dict[MetricName, ThresholdOverride] = Field(default_factory=dict)
    prompts: dict[str, PromptSettings] = Field(default_factory=dict)

    def threshold(self, prompt_id: str, metric: MetricName) -> Threshold:
        """The metric's default, then the file's global, then its per-prompt override."""
        merged = METRICS[metric].default.model_dump()
        prompt = self.prompts.get(prompt_id)
        for override in (self.metrics.get(metric), prompt and prompt.metrics.get(metric)):
            if override is not None:
                merged.update(override.model_dump(exclude_none=True))
        return Threshold.model_validate(merged)

    def monthly_volume_for(self, prompt_id: str, *runs: RunMetadata) -> int | None:
        """The per-prompt volume, else the file's, else the first run that states one."""
        prompt = self.prompts.get(prompt_id)
        candidates = [prompt.monthly_volume if prompt else None, self.monthly_volume]
        candidates += [run.monthly_volume for run in runs]
        return next((volume for volume in candidates if volume is not None), None)


def load_settings(path: Path) -> CompareSettings:
    """Read a thresholds YAML file; raise :class:`ThresholdsError` naming the problem."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdsError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdsError(path, f"cannot read the file ({exc})") from None
    except yaml.YAMLError as exc:
        raise ThresholdsError(path, f"malformed YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return CompareSettings()
    if not isinstance(data, dict):
        raise ThresholdsError(path, "expected a mapping at the top level")
    try:
        return CompareSettings.model_validate(data)
    except ValidationError as exc:
        raise ThresholdsError(path, f"invalid thresholds: {describe_errors(exc)}") from None


class MetricComparison(BaseModel):
    """One metric of one prompt: both values, the change, its interval, test and verdict."""

    model_config = ConfigDict(frozen=True)

    metric: MetricName
    label: str
    unit: str
    direction: Direction
    base: float
    candidate: float
    change: float = Field(description="candidate - base, in the metric's unit.")
    relative_change: float | None = Field(
        description="candidate / base - 1; null if only base is 0."
    )
    interval_kind: IntervalKind = Field(
        description="Whether the interval is of the relative change."
    )
    ci_low: float | None
    ci_high: float | None
    test: str
    p_value: float
    p_adjusted: float
    n_base: int
    n_candidate: int
    threshold: Threshold
    verdict: Verdict


class MonthlyCost(BaseModel):
    """Mean cost per successful call times the monthly volume."""

    model_config = ConfigDict(frozen=True)

    volume: int
    base_usd: float
    candidate_usd: float


class PromptComparison(BaseModel):
    """Everything compared for one prompt."""

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    verdict: Verdict
    base_versions: list[str]
    candidate_versions: list[str]
    base_models: list[str]
    candidate_models: list[str]
    base_calls: int
    candidate_calls: int
    quality_metric: str | None = Field(description="The quality scorer both runs used, if any.")
    metrics: list[MetricComparison]
    monthly_cost: MonthlyCost | None
    notes: list[str]


class Comparison(BaseModel):
    """The comparison of a candidate run with a base run."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = COMPARISON_SCHEMA_VERSION
    verdict: Verdict
    alpha: float
    correction: Literal["holm", "bonferroni"]
    confidence: float = Field(description="Level of the intervals, 1 - alpha.")
    base_run: RunMetadata
    candidate_run: RunMetadata
    prompts: list[PromptComparison]
    only_in_base: list[str]
    only_in_candidate: list[str]
    notes: list[str]

    def regressions(self) -> list[tuple[str, MetricComparison]]:
        """(prompt id, metric) for every regressed metric."""
        return [
            (prompt.prompt_id, metric)
            for prompt in self.prompts
            for metric in prompt.metrics
            if metric.verdict == "regression"
        ]


@dataclass(frozen=True)
class _Calls:
    """The arrays one prompt's records of one run contribute."""

    total: int
    errors: int
    latency: FloatArray
    ttft: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    cost: FloatArray
    quality: dict[str, float]
    quality_metrics: frozenset[str]


@dataclass(frozen=True)
class _Estimate:
    metric: MetricName
    base: float
    candidate: float
    interval: tuple[float | None, float | None]
    n_base: int
    n_candidate: int


@dataclass(frozen=True)
class _Test:
    name: str
    p_value: float
    estimates: list[_Estimate]


def _array(values: Sequence[float | None]) -> FloatArray:
    return np.array([value for value in values if value is not None], dtype=np.float64)


def _extract(records: Sequence[CallRecord]) -> _Calls:
    ok = [record for record in records if record.status == "ok"]
    scores: dict[str, list[float]] = defaultdict(list)
    for record in ok:
        if record.quality_score is not None:
            scores[record.item_id].append(record.quality_score)
    return _Calls(
        total=len(records),
        errors=len(records) - len(ok),
        latency=_array([record.latency_ms for record in ok]),
        ttft=_array([record.ttft_ms for record in ok]),
        input_tokens=_array([record.input_tokens for record in ok]),
        output_tokens=_array([record.output_tokens for record in ok]),
        cost=_array([record.cost_usd for record in ok]),
        quality={item: float(np.mean(values)) for item, values in scores.items()},
        quality_metrics=frozenset(
            record.quality_metric for record in ok if record.quality_metric is not None
        ),
    )


def _bootstrap(
    values: FloatArray,
    statistic: Callable[[FloatArray], FloatArray],
    rng: np.random.Generator,
    n_resamples: int,
) -> FloatArray:
    """``statistic`` (reducing the last axis) of resamples of ``values``; resamples last."""
    chunk = max(1, BOOTSTRAP_CHUNK_ELEMENTS // len(values))
    parts = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        parts.append(statistic(values[rng.integers(0, len(values), size=(size, len(values)))]))
    return np.concatenate(parts, axis=-1)


def _interval(draws: FloatArray, alpha: float) -> tuple[float | None, float | None]:
    """Percentile interval at level 1 - alpha; (None, None) if some draw is undefined."""
    if not np.all(np.isfinite(draws)):
        return None, None
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _relative_draws(base: FloatArray, candidate: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return candidate / base - 1.0


def _mann_whitney(base: FloatArray, candidate: FloatArray) -> float:
    return float(stats.mannwhitneyu(candidate, base, alternative="two-sided").pvalue)


def _quantiles(values: FloatArray) -> FloatArray:
    return np.quantile(values, QUANTILES, axis=-1)


def _mean(values: FloatArray) -> FloatArray:
    return np.asarray(np.mean(values, axis=-1), dtype=np.float64)


def _enough(base: FloatArray, candidate: FloatArray) -> bool:
    return len(base) >= MIN_CALLS and len(candidate) >= MIN_CALLS


def _compare_quantiles(
    prefix: Literal["latency", "ttft"],
    base: FloatArray,
    candidate: FloatArray,
    rng: np.random.Generator,
    settings: CompareSettings,
) -> _Test | None:
    if not _enough(base, candidate):
        return None
    base_draws = _bootstrap(base, _quantiles, rng, settings.n_resamples)
    candidate_draws = _bootstrap(candidate, _quantiles, rng, settings.n_resamples)
    relative = _relative_draws(base_draws, candidate_draws)
    points = zip(
        QUANTILE_METRICS[prefix], _quantiles(base), _quantiles(candidate), relative, strict=True
    )
    estimates = [
        _Estimate(
            metric=metric,
            base=float(base_value),
            candidate=float(candidate_value),
            interval=_interval(draws, settings.alpha),
            n_base=len(base),
            n_candidate=len(candidate),
        )
        for metric, base_value, candidate_value, draws in points
    ]
    return _Test("mann-whitney-u", _mann_whitney(base, candidate), estimates)


def _compare_means(
    metric: MetricName,
    base: FloatArray,
    candidate: FloatArray,
    rng: np.random.Generator,
    settings: CompareSettings,
) -> _Test | None:
    if not _enough(base, candidate):
        return None
    relative = _relative_draws(
        _bootstrap(base, _mean, rng, settings.n_resamples),
        _bootstrap(candidate, _mean, rng, settings.n_resamples),
    )
    estimate = _Estimate(
        metric=metric,
        base=float(np.mean(base)),
        candidate=float(np.mean(candidate)),
        interval=_interval(relative, settings.alpha),
        n_base=len(base),
        n_candidate=len(candidate),
    )
    return _Test("mann-whitney-u", _mann_whitney(base, candidate), [estimate])


def _compare_errors(
    base: _Calls, candidate: _Calls, rng: np.random.Generator, settings: CompareSettings
) -> _Test | None:
    if base.total < MIN_CALLS or candidate.total < MIN_CALLS:
        return None
    table = np.array(
        [
            [candidate.errors, candidate.total - candidate.errors],
            [base.errors, base.total - base.errors],
        ]
    )
    if np.min(expected_freq(table)) >= MIN_EXPECTED_FOR_Z_TEST:
        name = "two-proportion-z"
        p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
    else:
        name = "fisher-exact"
        p_value = float(stats.fisher_exact(table).pvalue)
    base_rate, candidate_rate = base.errors / base.total, candidate.errors / candidate.total
    size = settings.n_resamples
    draws = (
        rng.binomial(candidate.total, candidate_rate, size) / candidate.total
        - rng.binomial(base.total, base_rate, size) / base.total
    )
    estimate = _Estimate(
        "error_rate",
        base_rate,
        candidate_rate,
        _interval(draws, settings.alpha),
        base.total,
        candidate.total,
    )
    return _Test(name, p_value, [estimate])


def _quality_pairs(base: _Calls, candidate: _Calls) -> tuple[FloatArray, FloatArray] | str:
    """Per-item mean scores of the items scored in both runs, or why quality is not compared."""
    if not base.quality or not candidate.quality:
        return "quality not compared: no scored calls in one of the runs"
    metrics = base.quality_metrics | candidate.quality_metrics
    if len(metrics) > 1:
        return f"quality not compared: different quality metrics ({', '.join(sorted(metrics))})"
    items = sorted(base.quality.keys() & candidate.quality.keys())
    if len(items) < MIN_ITEMS:
        return f"quality not compared: {len(items)} dataset item(s) scored in both runs"
    return (
        np.array([base.quality[item] for item in items]),
        np.array([candidate.quality[item] for item in items]),
    )


def _compare_quality(
    base: _Calls, candidate: _Calls, rng: np.random.Generator, settings: CompareSettings
) -> _Test | str:
    pairs = _quality_pairs(base, candidate)
    if isinstance(pairs, str):
        return pairs
    base_scores, candidate_scores = pairs
    differences = candidate_scores - base_scores
    p_value = float(stats.wilcoxon(differences).pvalue) if np.any(differences) else 1.0
    draws = _bootstrap(differences, _mean, rng, settings.n_resamples)
    estimate = _Estimate(
        "quality",
        float(np.mean(base_scores)),
        float(np.mean(candidate_scores)),
        _interval(draws, settings.alpha),
        len(base_scores),
        len(candidate_scores),
    )
    return _Test("wilcoxon-signed-rank", p_value, [estimate])


def adjust_p_values(
    p_values: Sequence[float], method: Literal["holm", "bonferroni"]
) -> list[float]:
    """Family-wise corrected p-values (Holm's step-down or Bonferroni), capped at 1."""
    values = np.asarray(p_values, dtype=np.float64)
    count = len(values)
    if method == "bonferroni":
        return [float(value) for value in np.minimum(values * count, 1.0)]
    order = np.argsort(values, kind="stable")
    stepped = np.maximum.accumulate(values[order] * (count - np.arange(count)))
    adjusted = np.empty(count)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(value) for value in adjusted]


def _relative_change(base: float, candidate: float) -> float | None:
    if candidate == base:
        return 0.0
    relative = candidate / base - 1.0 if base != 0 else math.inf
    return relative if math.isfinite(relative) else None


def _log_ratio(candidate: float, base: float) -> float:
    if candidate == base:
        return 0.0
    if base == 0:
        return math.inf
    if candidate == 0:
        return -math.inf
    return math.log(candidate) - math.log(base)


def decide(
    metric: MetricName, base: float, candidate: float, threshold: Threshold, significant: bool
) -> Verdict:
    """The verdict for a metric whose test is (or is not) significant, given its thresholds."""
    if not significant:
        return "no_change"
    sign = 1.0 if METRICS[metric].direction == "lower_is_better" else -1.0
    worse_change = sign * (candidate - base)
    worse_log_ratio = sign * _log_ratio(candidate, base)
    limit = math.log1p(threshold.relative)
    if worse_change > threshold.absolute and worse_log_ratio > limit:
        return "regression"
    if -worse_change > threshold.absolute and -worse_log_ratio > limit:
        return "improvement"
    return "no_change"


def _metric_comparison(
    estimate: _Estimate, test: _Test, p_adjusted: float, prompt_id: str, settings: CompareSettings
) -> MetricComparison:
    info = METRICS[estimate.metric]
    threshold = settings.threshold(prompt_id, estimate.metric)
    significant = p_adjusted < settings.alpha
    base, candidate = estimate.base, estimate.candidate
    return MetricComparison(
        metric=estimate.metric,
        label=info.label,
        unit=info.unit,
        direction=info.direction,
        base=base,
        candidate=candidate,
        change=candidate - base,
        relative_change=_relative_change(base, candidate),
        interval_kind="absolute" if estimate.metric in ("error_rate", "quality") else "relative",
        ci_low=estimate.interval[0],
        ci_high=estimate.interval[1],
        test=test.name,
        p_value=test.p_value,
        p_adjusted=p_adjusted,
        n_base=estimate.n_base,
        n_candidate=estimate.n_candidate,
        threshold=threshold,
        verdict=decide(estimate.metric, base, candidate, threshold, significant),
    )


def _prompt_rng(prompt_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(prompt_id.encode())])


def _run_tests(
    base: _Calls, candidate: _Calls, rng: np.random.Generator, settings: CompareSettings
) -> tuple[list[_Test], list[str]]:
    tests = [
        _compare_quantiles("latency", base.latency, candidate.latency, rng, settings),
        _compare_quantiles("ttft", base.ttft, candidate.ttft, rng, settings),
        _compare_means("input_tokens", base.input_tokens, candidate.input_tokens, rng, settings),
        _compare_means("output_tokens", base.output_tokens, candidate.output_tokens, rng, settings),
        _compare_means("cost_per_call", base.cost, candidate.cost, rng, settings),
        _compare_errors(base, candidate, rng, settings),
    ]
    done = [test for test in tests if test is not None]
    quality = _compare_quality(base, candidate, rng, settings)
    if isinstance(quality, str):
        return done, [quality]
    return [*done, quality], []


def _monthly_cost(
    prompt_id: str,
    base: _Calls,
    candidate: _Calls,
    runs: tuple[RunMetadata, RunMetadata],
    settings: CompareSettings,
) -> MonthlyCost | None:
    volume = settings.monthly_volume_for(prompt_id, runs[1], runs[0])
    if volume is None or not len(base.cost) or not len(candidate.cost):
        return None
    return MonthlyCost(
        volume=volume,
        base_usd=float(np.mean(base.cost)) * volume,
        candidate_usd=float(np.mean(candidate.cost)) * volume,
    )


def _overall(verdicts: Sequence[Verdict]) -> Verdict:
    if "regression" in verdicts:
        return "regression"
    return "improvement" if "improvement" in verdicts else "no_change"


def _shared_quality_metric(base: _Calls, candidate: _Calls) -> str | None:
    names = base.quality_metrics | candidate.quality_metrics
    return next(iter(names)) if len(names) == 1 else None


def _distinct(values: Sequence[str]) -> list[str]:
    return sorted(set(values))


def _compare_prompt(
    prompt_id: str, base: RunFile, candidate: RunFile, settings: CompareSettings
) -> PromptComparison:
    base_records, candidate_records = base.prompts[prompt_id], candidate.prompts[prompt_id]
    base_calls, candidate_calls = _extract(base_records), _extract(candidate_records)
    rng = _prompt_rng(prompt_id, settings.seed)
    tests, notes = _run_tests(base_calls, candidate_calls, rng, settings)
    adjusted = adjust_p_values([test.p_value for test in tests], settings.correction)
    metrics = [
        _metric_comparison(estimate, test, p_adjusted, prompt_id, settings)
        for test, p_adjusted in zip(tests, adjusted, strict=True)
        for estimate in test.estimates
    ]
    metrics.sort(key=lambda metric: METRIC_NAMES.index(metric.metric))
    runs = (base.run, candidate.run)
    return PromptComparison(
        prompt_id=prompt_id,
        verdict=_overall([metric.verdict for metric in metrics]),
        base_versions=_distinct([record.prompt_version for record in base_records]),
        candidate_versions=_distinct([record.prompt_version for record in candidate_records]),
        base_models=_distinct([record.model for record in base_records]),
        candidate_models=_distinct([record.model for record in candidate_records]),
        base_calls=len(base_records),
        candidate_calls=len(candidate_records),
        quality_metric=_shared_quality_metric(base_calls, candidate_calls),
        metrics=metrics,
        monthly_cost=_monthly_cost(prompt_id, base_calls, candidate_calls, runs, settings),
        notes=notes,
    )


def _common_prompts(base: RunFile, candidate: RunFile) -> list[str]:
    common = sorted(
        prompt_id
        for prompt_id in base.prompts.keys() & candidate.prompts.keys()
        if base.prompts[prompt_id] and candidate.prompts[prompt_id]
    )
    if not common:
        raise CompareError(
            "the runs have no prompt with calls in both: "
            f"base has {_listing(base)}, candidate has {_listing(candidate)}"
        )
    return common


def _not_compared(run: RunFile, common: Sequence[str]) -> list[str]:
    """Prompts with calls in ``run`` that are not compared (absent or empty on the other side)."""
    return sorted(
        prompt_id
        for prompt_id, records in run.prompts.items()
        if records and prompt_id not in common
    )


def _listing(run: RunFile) -> str:
    names = sorted(prompt_id for prompt_id, records in run.prompts.items() if records)
    return ", ".join(names) if names else "no calls"


def compare_runs(
    base: RunFile, candidate: RunFile, settings: CompareSettings | None = None
) -> Comparison:
    """Compare every prompt present in both runs; raise :class:`CompareError` if there is none."""
    settings = settings or CompareSettings()
    common = _common_prompts(base, candidate)
    prompts = [_compare_prompt(prompt_id, base, candidate, settings) for prompt_id in common]
    notes = []
    if base.run.suite != candidate.run.suite:
        notes.append(
            f"different suites: base {base.run.suite!r}, candidate {candidate.run.suite!r}"
        )
    return Comparison(
        verdict=_overall([prompt.verdict for prompt in prompts]),
        alpha=settings.alpha,
        correction=settings.correction,
        confidence=1.0 - settings.alpha,
        base_run=base.run,
        candidate_run=candidate.run,
        prompts=prompts,
        only_in_base=_not_compared(base, common),
        only_in_candidate=_not_compared(candidate, common),
        notes=notes,
    )
