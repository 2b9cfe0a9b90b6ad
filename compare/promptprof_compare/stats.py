"""Compare two runs prompt by prompt and decide, per metric, regression, improvement or no change.

Every metric is judged by a test of its own quantity, two-sided, whose direction (candidate
higher or lower) is part of its result (per prompt present in both runs):

* Latency and TTFT (successful calls): p50, p95 and p99, each tested on its own with the
  quantile test (Mood's median test generalised to the quantile q, as in Conover's *Practical
  Nonparametric Statistics*): both runs are pooled, and the fractions of each run above the
  pooled q-quantile are compared with the proportion test below. A faster bulk with an unchanged
  tail is an improvement of p50, and p99 is judged by its own test. The interval is a
  percentile bootstrap of the relative difference of the quantile, both runs resampled
  independently.
* Input tokens, output tokens and cost per successful call: the mean. When the runs share
  dataset items (two runs of one suite do), the test is the paired t-test of the per-item
  differences of the item means (each item's mean over its repetitions), which removes the
  spread between items (its quantity, the mean of the item means' differences, is the
  difference of the means when every item has as many successful calls in both runs);
  otherwise Welch's t-test of the difference of the means. The interval is a bootstrap of the
  relative difference of the means. The monthly cost is the mean cost per
  call times the configured monthly volume.
* Error rate (all calls): Fisher's exact test, or the pooled two-proportion z-test (the
  chi-square test without continuity correction) when every expected cell count is at least 10;
  the interval is a bootstrap of the difference in percentage points.
* Quality: paired by dataset item. Each item's score is the mean over its repetitions; the test is
  the paired t-test of the mean per-item difference over the items present in both runs, the
  interval a bootstrap of that mean difference (absolute).

Multiple testing: every test of every prompt of one comparison forms one family (up to eleven
tests a prompt: three latency and three TTFT quantiles, input tokens, output tokens, cost,
errors, quality), corrected with Holm's step-down method, which controls the family-wise error
rate at ``alpha`` under any dependence between the tests and is never less powerful than
Bonferroni (Bonferroni is available as an option). The comparison states the family's size.

Verdict: a metric is a regression only when its test is significant (corrected p < ``alpha``,
default 0.01) in the worse direction and its point estimate moved in the worse direction by more
than both the relative and the absolute threshold; an improvement likewise in the better
direction; otherwise no change. The relative threshold r is applied to the ratio
candidate/base: worse means a ratio beyond 1 + r, better a ratio beyond 1 / (1 + r), so that
swapping the two runs swaps regression and improvement exactly. Intervals are at the level
1 - ``alpha``; they inform, they do not decide.

Latency is the producer's ``promptprof.latency_ms`` (wall time from the call's start to its end)
and a quantile q is the value at rank floor(q * (n - 1)), the processor's convention. The tested
latency quantiles are of successful calls (a failed call is counted by the error rate); the
dashboards' percentiles include failed calls, so each prompt also carries the latency quantiles
of all calls, untested, under that name.
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
COMPARISON_SCHEMA_VERSION: Final = 2

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
    "latency_p50": _info("latency p50 (successful calls)", "ms", "lower_is_better", 0.10, 50.0),
    "latency_p95": _info("latency p95 (successful calls)", "ms", "lower_is_better", 0.10, 50.0),
    "latency_p99": _info("latency p99 (successful calls)", "ms", "lower_is_better", 0.10, 50.0),
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
    test_direction: Literal[-1, 0, 1] = Field(
        description="What the test found: 1 candidate higher, -1 candidate lower, 0 no difference."
    )
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


class AllCallsQuantile(BaseModel):
    """A latency quantile over all calls, failed ones included (as the dashboards count it)."""

    model_config = ConfigDict(frozen=True)

    quantile: float
    base_ms: float
    candidate_ms: float


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
    latency_all_calls: list[AllCallsQuantile] = Field(
        description="Latency p50, p95, p99 over all calls (failed ones included), not tested."
    )
    monthly_cost: MonthlyCost | None
    notes: list[str]


class Comparison(BaseModel):
    """The comparison of a candidate run with a base run."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[2] = COMPARISON_SCHEMA_VERSION
    verdict: Verdict
    alpha: float
    correction: Literal["holm", "bonferroni"]
    family_size: int = Field(
        description="Tests corrected together: every metric of every prompt compared."
    )
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
class _Values:
    """A per-call quantity of one run: every call's value and each dataset item's mean."""

    calls: FloatArray
    by_item: dict[str, float]


@dataclass(frozen=True)
class _Calls:
    """The arrays one prompt's records of one run contribute."""

    total: int
    errors: int
    latency: FloatArray
    latency_all: FloatArray
    ttft: FloatArray
    input_tokens: _Values
    output_tokens: _Values
    cost: _Values
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


Sign = Literal[-1, 0, 1]


@dataclass(frozen=True)
class _Test:
    """A test of one metric's quantity: its p-value and the direction it found."""

    name: str
    p_value: float
    sign: Sign
    estimate: _Estimate


def _array(values: Sequence[float | None]) -> FloatArray:
    return np.array([value for value in values if value is not None], dtype=np.float64)


def _by_item(records: Sequence[CallRecord], values: Sequence[float | None]) -> dict[str, float]:
    """Each item's mean of the known ``values`` (one per record)."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for record, value in zip(records, values, strict=True):
        if value is not None:
            grouped[record.item_id].append(value)
    return {item: float(np.mean(known)) for item, known in grouped.items()}


def _values(records: Sequence[CallRecord], values: Sequence[float | None]) -> _Values:
    return _Values(_array(values), _by_item(records, values))


def _extract(records: Sequence[CallRecord]) -> _Calls:
    ok = [record for record in records if record.status == "ok"]
    return _Calls(
        total=len(records),
        errors=len(records) - len(ok),
        latency=_array([record.latency_ms for record in ok]),
        latency_all=_array([record.latency_ms for record in records]),
        ttft=_array([record.ttft_ms for record in ok]),
        input_tokens=_values(ok, [record.input_tokens for record in ok]),
        output_tokens=_values(ok, [record.output_tokens for record in ok]),
        cost=_values(ok, [record.cost_usd for record in ok]),
        quality=_by_item(ok, [record.quality_score for record in ok]),
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


def _sign(value: float) -> Sign:
    return 1 if value > 0 else -1 if value < 0 else 0


def proportion_test(
    candidate_hits: int, candidate_total: int, base_hits: int, base_total: int
) -> tuple[str, float]:
    """Two-sided test of two proportions: the test's name and its p-value.

    The pooled two-proportion z-test (chi-square without continuity correction) when every
    expected cell count is at least 10, else Fisher's exact test.
    """
    table = np.array(
        [
            [candidate_hits, candidate_total - candidate_hits],
            [base_hits, base_total - base_hits],
        ]
    )
    if np.min(expected_freq(table)) >= MIN_EXPECTED_FOR_Z_TEST:
        return "two-proportion-z", float(stats.chi2_contingency(table, correction=False).pvalue)
    return "fisher-exact", float(stats.fisher_exact(table).pvalue)


def quantile_test(base: FloatArray, candidate: FloatArray, q: float) -> tuple[str, float, Sign]:
    """Two-sided test that both runs share their ``q``-quantile; name, p-value and direction.

    The runs are pooled; the fraction of each above the pooled ``q``-quantile is compared with
    :func:`proportion_test`. The direction is 1 when more of the candidate lies above (its
    quantile is higher), -1 when less, 0 when the fractions are equal.
    """
    cut = np.quantile(np.concatenate([base, candidate]), q)
    candidate_hits = int(np.count_nonzero(candidate > cut))
    base_hits = int(np.count_nonzero(base > cut))
    name, p_value = proportion_test(candidate_hits, len(candidate), base_hits, len(base))
    sign = _sign(candidate_hits * len(base) - base_hits * len(candidate))
    return f"quantile-test/{name}", p_value, sign


def t_test_p_value(difference: float, variance: float, df: float) -> float:
    """Two-sided p-value of a t statistic ``difference / sqrt(variance)`` with ``df`` degrees.

    A zero difference gives 1; a non-zero difference with zero variance gives 0.
    """
    if difference == 0:
        return 1.0
    if variance == 0:
        return 0.0
    return float(2 * stats.t.sf(abs(difference) / math.sqrt(variance), df))


def welch_test(base: FloatArray, candidate: FloatArray) -> tuple[float, Sign]:
    """Welch's two-sided t-test of the difference of the means: p-value and direction."""
    difference = float(np.mean(candidate) - np.mean(base))
    parts = [(float(np.var(run, ddof=1)) / len(run), len(run) - 1) for run in (candidate, base)]
    variance = sum(part for part, _ in parts)
    denominator = sum(part**2 / dof for part, dof in parts)
    df = variance**2 / denominator if denominator > 0 else math.inf
    return t_test_p_value(difference, variance, df), _sign(difference)


def paired_t_test(differences: FloatArray) -> tuple[float, Sign]:
    """Two-sided paired t-test that the mean of ``differences`` is 0: p-value and direction."""
    mean = float(np.mean(differences))
    variance = float(np.var(differences, ddof=1)) / len(differences)
    return t_test_p_value(mean, variance, len(differences) - 1), _sign(mean)


def _quantiles(values: FloatArray) -> FloatArray:
    """p50, p95, p99 as the processor defines them: the value at rank floor(q * (n - 1))."""
    return np.quantile(values, QUANTILES, axis=-1, method="lower")


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
) -> list[_Test]:
    if not _enough(base, candidate):
        return []
    relative = _relative_draws(
        _bootstrap(base, _quantiles, rng, settings.n_resamples),
        _bootstrap(candidate, _quantiles, rng, settings.n_resamples),
    )
    points = zip(
        QUANTILE_METRICS[prefix],
        QUANTILES,
        _quantiles(base),
        _quantiles(candidate),
        relative,
        strict=True,
    )
    tests = []
    for metric, q, base_value, candidate_value, draws in points:
        name, p_value, sign = quantile_test(base, candidate, q)
        estimate = _Estimate(
            metric=metric,
            base=float(base_value),
            candidate=float(candidate_value),
            interval=_interval(draws, settings.alpha),
            n_base=len(base),
            n_candidate=len(candidate),
        )
        tests.append(_Test(name, p_value, sign, estimate))
    return tests


def _mean_test(base: _Values, candidate: _Values) -> tuple[str, float, Sign]:
    """The paired t-test over per-item means when the runs share items, else Welch's t-test."""
    items = sorted(base.by_item.keys() & candidate.by_item.keys())
    if len(items) >= MIN_ITEMS:
        differences = np.array([candidate.by_item[i] - base.by_item[i] for i in items])
        return ("paired-t-by-item", *paired_t_test(differences))
    return ("welch-t", *welch_test(base.calls, candidate.calls))


def _compare_means(
    metric: MetricName,
    base_values: _Values,
    candidate_values: _Values,
    rng: np.random.Generator,
    settings: CompareSettings,
) -> list[_Test]:
    base, candidate = base_values.calls, candidate_values.calls
    if not _enough(base, candidate):
        return []
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
    return [_Test(*_mean_test(base_values, candidate_values), estimate)]


def _compare_errors(
    base: _Calls, candidate: _Calls, rng: np.random.Generator, settings: CompareSettings
) -> list[_Test]:
    if base.total < MIN_CALLS or candidate.total < MIN_CALLS:
        return []
    name, p_value = proportion_test(candidate.errors, candidate.total, base.errors, base.total)
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
    sign = _sign(candidate.errors * base.total - base.errors * candidate.total)
    return [_Test(name, p_value, sign, estimate)]


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
    draws = _bootstrap(differences, _mean, rng, settings.n_resamples)
    estimate = _Estimate(
        "quality",
        float(np.mean(base_scores)),
        float(np.mean(candidate_scores)),
        _interval(draws, settings.alpha),
        len(base_scores),
        len(candidate_scores),
    )
    p_value, sign = paired_t_test(differences)
    return _Test("paired-t", p_value, sign, estimate)


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
    metric: MetricName, base: float, candidate: float, threshold: Threshold, significant: Sign
) -> Verdict:
    """The verdict for a metric given what its test found and its thresholds.

    ``significant`` is the direction the test found significant (1: candidate higher, -1:
    candidate lower), or 0 when the test is not significant. A verdict needs the test and the
    point estimate to agree on the direction, and the estimate to pass both thresholds.
    """
    worse: Sign = 1 if METRICS[metric].direction == "lower_is_better" else -1
    worse_change = worse * (candidate - base)
    worse_log_ratio = worse * _log_ratio(candidate, base)
    limit = math.log1p(threshold.relative)
    if significant == worse and worse_change > threshold.absolute and worse_log_ratio > limit:
        return "regression"
    if significant == -worse and -worse_change > threshold.absolute and -worse_log_ratio > limit:
        return "improvement"
    return "no_change"


def _metric_comparison(
    test: _Test, p_adjusted: float, prompt_id: str, settings: CompareSettings
) -> MetricComparison:
    estimate = test.estimate
    info = METRICS[estimate.metric]
    threshold = settings.threshold(prompt_id, estimate.metric)
    significant: Sign = test.sign if p_adjusted < settings.alpha else 0
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
        test_direction=test.sign,
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
        *_compare_quantiles("latency", base.latency, candidate.latency, rng, settings),
        *_compare_quantiles("ttft", base.ttft, candidate.ttft, rng, settings),
        *_compare_means("input_tokens", base.input_tokens, candidate.input_tokens, rng, settings),
        *_compare_means(
            "output_tokens", base.output_tokens, candidate.output_tokens, rng, settings
        ),
        *_compare_means("cost_per_call", base.cost, candidate.cost, rng, settings),
        *_compare_errors(base, candidate, rng, settings),
    ]
    quality = _compare_quality(base, candidate, rng, settings)
    if isinstance(quality, str):
        return tests, [quality]
    return [*tests, quality], []


def _latency_all_calls(base: _Calls, candidate: _Calls) -> list[AllCallsQuantile]:
    if not _enough(base.latency_all, candidate.latency_all):
        return []
    pairs = zip(
        QUANTILES, _quantiles(base.latency_all), _quantiles(candidate.latency_all), strict=True
    )
    return [
        AllCallsQuantile(quantile=q, base_ms=float(b), candidate_ms=float(c)) for q, b, c in pairs
    ]


def _monthly_cost(
    prompt_id: str,
    base: _Calls,
    candidate: _Calls,
    runs: tuple[RunMetadata, RunMetadata],
    settings: CompareSettings,
) -> MonthlyCost | None:
    volume = settings.monthly_volume_for(prompt_id, runs[1], runs[0])
    if volume is None or not len(base.cost.calls) or not len(candidate.cost.calls):
        return None
    return MonthlyCost(
        volume=volume,
        base_usd=float(np.mean(base.cost.calls)) * volume,
        candidate_usd=float(np.mean(candidate.cost.calls)) * volume,
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


@dataclass(frozen=True)
class _Tested:
    """One prompt's tests, before the family's correction, and its comparison without them."""

    tests: list[_Test]
    draft: PromptComparison


def _test_prompt(
    prompt_id: str, base: RunFile, candidate: RunFile, settings: CompareSettings
) -> _Tested:
    base_records, candidate_records = base.prompts[prompt_id], candidate.prompts[prompt_id]
    base_calls, candidate_calls = _extract(base_records), _extract(candidate_records)
    tests, notes = _run_tests(
        base_calls, candidate_calls, _prompt_rng(prompt_id, settings.seed), settings
    )
    runs = (base.run, candidate.run)
    draft = PromptComparison(
        prompt_id=prompt_id,
        verdict="no_change",
        base_versions=_distinct([record.prompt_version for record in base_records]),
        candidate_versions=_distinct([record.prompt_version for record in candidate_records]),
        base_models=_distinct([record.model for record in base_records]),
        candidate_models=_distinct([record.model for record in candidate_records]),
        base_calls=len(base_records),
        candidate_calls=len(candidate_records),
        quality_metric=_shared_quality_metric(base_calls, candidate_calls),
        metrics=[],
        latency_all_calls=_latency_all_calls(base_calls, candidate_calls),
        monthly_cost=_monthly_cost(prompt_id, base_calls, candidate_calls, runs, settings),
        notes=notes,
    )
    return _Tested(tests, draft)


def _judge_prompt(
    tested: _Tested, adjusted: Sequence[float], settings: CompareSettings
) -> PromptComparison:
    metrics = [
        _metric_comparison(test, p_adjusted, tested.draft.prompt_id, settings)
        for test, p_adjusted in zip(tested.tests, adjusted, strict=True)
    ]
    metrics.sort(key=lambda metric: METRIC_NAMES.index(metric.metric))
    verdict = _overall([metric.verdict for metric in metrics])
    return tested.draft.model_copy(update={"metrics": metrics, "verdict": verdict})


def _judge_family(
    tested: Sequence[_Tested], settings: CompareSettings
) -> tuple[list[PromptComparison], int]:
    """Correct every test of every prompt as one family; the prompts and the family's size."""
    adjusted = adjust_p_values(
        [test.p_value for prompt in tested for test in prompt.tests], settings.correction
    )
    prompts, start = [], 0
    for prompt in tested:
        end = start + len(prompt.tests)
        prompts.append(_judge_prompt(prompt, adjusted[start:end], settings))
        start = end
    return prompts, len(adjusted)


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
    """Compare every prompt present in both runs; raise :class:`CompareError` if there is none.

    Every test of every prompt is corrected as one family (``family_size`` tests).
    """
    settings = settings or CompareSettings()
    common = _common_prompts(base, candidate)
    tested = [_test_prompt(prompt_id, base, candidate, settings) for prompt_id in common]
    prompts, family_size = _judge_family(tested, settings)
    notes = []
    if base.run.suite != candidate.run.suite:
        notes.append(
            f"different suites: base {base.run.suite!r}, candidate {candidate.run.suite!r}"
        )
    return Comparison(
        verdict=_overall([prompt.verdict for prompt in prompts]),
        alpha=settings.alpha,
        correction=settings.correction,
        family_size=family_size,
        confidence=1.0 - settings.alpha,
        base_run=base.run,
        candidate_run=candidate.run,
        prompts=prompts,
        only_in_base=_not_compared(base, common),
        only_in_candidate=_not_compared(candidate, common),
        notes=notes,
    )
