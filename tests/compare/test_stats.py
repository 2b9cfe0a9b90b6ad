"""Unit tests of the comparison engine: corrections, verdict rule, thresholds file, edge cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from promptprof_compare.runfile import CallRecord, RunFile, RunMetadata
from promptprof_compare.stats import (
    CompareError,
    CompareSettings,
    MetricName,
    Threshold,
    ThresholdsError,
    adjust_p_values,
    compare_runs,
    decide,
    load_settings,
    paired_t_test,
    quantile_test,
    welch_test,
)
from promptprof_compare.synthetic import (
    MIXED_SHIFT,
    SLOW_TAIL_PROFILE,
    SyntheticProfile,
    synthetic_pair,
    synthetic_run,
)

PROFILE = SyntheticProfile()
TEN_PERCENT_50 = Threshold(relative=0.10, absolute=50.0)


def _metadata(volume: int | None = None, suite: str = "s") -> RunMetadata:
    return RunMetadata(
        suite=suite,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        provider="x",
        seed=1,
        monthly_volume=volume,
    )


def _call(item: str, latency: float, **changes: object) -> CallRecord:
    fields: dict[str, object] = {
        "item_id": item,
        "repetition": 0,
        "prompt_id": "p",
        "prompt_version": "v1",
        "model": "m",
        "latency_ms": latency,
        "input_tokens": 10,
        "output_tokens": 5,
    }
    fields.update(changes)
    return CallRecord.model_validate(fields)


def _run(records: list[CallRecord], volume: int | None = None, suite: str = "s") -> RunFile:
    return RunFile(run=_metadata(volume, suite), prompts={"p": records})


def test_holm_matches_the_textbook_example() -> None:
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm")
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_bonferroni_multiplies_and_caps() -> None:
    assert adjust_p_values([0.01, 0.3], "bonferroni") == pytest.approx([0.02, 0.6])
    assert adjust_p_values([0.9], "bonferroni") == [0.9]
    assert adjust_p_values([0.6, 0.7], "bonferroni") == [1.0, 1.0]


@pytest.mark.parametrize(
    ("metric", "base", "candidate", "expected"),
    [
        ("latency_p50", 1000.0, 1200.0, "regression"),
        ("latency_p50", 1200.0, 1000.0, "improvement"),
        ("latency_p50", 1000.0, 1090.0, "no_change"),  # under the relative threshold
        ("latency_p50", 100.0, 140.0, "no_change"),  # +40% but under 50 ms
        ("latency_p50", 0.0, 100.0, "regression"),
        ("quality", 0.8, 0.7, "regression"),
        ("quality", 0.7, 0.8, "improvement"),
        ("quality", 0.8, 0.76, "no_change"),
        ("error_rate", 0.01, 0.05, "regression"),
        ("error_rate", 0.01, 0.025, "no_change"),
    ],
)
def test_decide_follows_direction_and_both_thresholds(
    metric: MetricName, base: float, candidate: float, expected: str
) -> None:
    threshold = CompareSettings().threshold("p", metric)
    found = 1 if candidate > base else -1
    assert decide(metric, base, candidate, threshold, significant=found) == expected
    assert decide(metric, base, candidate, threshold, significant=0) == "no_change"


@pytest.mark.parametrize("metric", ["latency_p99", "quality"])
def test_a_test_finding_the_other_direction_never_gives_a_verdict(metric: MetricName) -> None:
    """The point estimate moved far, but the metric's own test found the opposite direction."""
    threshold = Threshold(relative=0.0, absolute=0.0)
    assert decide(metric, 0.5, 0.9, threshold, significant=-1) == "no_change"
    assert decide(metric, 0.9, 0.5, threshold, significant=1) == "no_change"


def test_relative_threshold_is_symmetric_in_ratio() -> None:
    assert decide("latency_p50", 1000.0, 1101.0, TEN_PERCENT_50, 1) == "regression"
    assert decide("latency_p50", 1101.0, 1000.0, TEN_PERCENT_50, -1) == "improvement"


def test_thresholds_file_merges_global_and_per_prompt(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text(
        "alpha: 0.05\ncorrection: bonferroni\nmonthly_volume: 1000\n"
        "metrics:\n  latency_p95: {relative: 0.2}\n"
        "prompts:\n  p:\n    monthly_volume: 7\n    metrics:\n      latency_p95: {absolute: 9}\n",
        encoding="utf-8",
    )
    settings = load_settings(path)
    assert (settings.alpha, settings.correction) == (0.05, "bonferroni")
    assert settings.threshold("p", "latency_p95") == Threshold(relative=0.2, absolute=9)
    assert settings.threshold("q", "latency_p95") == Threshold(relative=0.2, absolute=50)
    assert settings.threshold("q", "quality") == Threshold(relative=0.0, absolute=0.05)
    assert settings.monthly_volume_for("p") == 7
    assert settings.monthly_volume_for("q", _metadata(5)) == 1000


def test_empty_thresholds_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("", encoding="utf-8")
    assert load_settings(path) == CompareSettings()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("metrics:\n  latency_p59: {relative: 0.1}\n", r"metrics\.latency_p59\.\[key\]"),
        ("metrics:\n  quality: {relative: -1}\n", r"metrics\.quality\.relative: .*greater"),
        ("metrics:\n  quality: {relatve: 1}\n", r"metrics\.quality\.relatve: Extra inputs"),
        ("alpha: 2\n", r"alpha: Input should be less than 1"),
        ("correction: fdr\n", r"correction: Input should be 'holm' or 'bonferroni'"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("alpha: [1\n", "malformed YAML"),
    ],
)
def test_bad_thresholds_file_is_explained(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ThresholdsError, match=expected) as caught:
        load_settings(path)
    assert str(caught.value).startswith(str(path))


def test_missing_thresholds_file(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_no_prompt_in_common_is_an_error() -> None:
    base = synthetic_run(PROFILE, items=3, repetitions=1, seed=1, prompt_id="a")
    candidate = synthetic_run(PROFILE, items=3, repetitions=1, seed=2, prompt_id="b")
    with pytest.raises(CompareError, match="no prompt with calls in both: base has a, candidate"):
        compare_runs(base, candidate)


def test_identical_runs_change_nothing() -> None:
    run = synthetic_run(PROFILE, items=20, repetitions=2, seed=3)
    comparison = compare_runs(run, run)
    assert comparison.verdict == "no_change"
    assert {metric.p_value for prompt in comparison.prompts for metric in prompt.metrics} == {1.0}
    assert [metric.metric for metric in comparison.prompts[0].metrics] == [
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


def test_each_quantile_has_its_own_test() -> None:
    base, candidate = synthetic_pair(
        PROFILE, replace(PROFILE, latency_factor=1.5), items=40, repetitions=3, trial=0
    )
    metrics = {metric.metric: metric for metric in compare_runs(base, candidate).prompts[0].metrics}
    latency = [metrics[name] for name in ("latency_p50", "latency_p95", "latency_p99")]
    assert len({metric.p_value for metric in latency}) == 3
    assert all(metric.test.startswith("quantile-test/") for metric in latency)
    assert metrics["latency_p50"].verdict == "regression"
    assert metrics["latency_p50"].test_direction == 1
    low, high = metrics["latency_p50"].ci_low, metrics["latency_p50"].ci_high
    assert low is not None and high is not None and low < 0.5 < high


def test_faster_bulk_with_the_same_tail_is_no_tail_regression() -> None:
    """Bulk 20 % faster, slow calls unchanged: p50 improves, p99 is not called a regression."""
    base, candidate = synthetic_pair(
        SLOW_TAIL_PROFILE, MIXED_SHIFT.candidate, items=200, repetitions=5, trial=3
    )
    metrics = {metric.metric: metric for metric in compare_runs(base, candidate).prompts[0].metrics}
    assert metrics["latency_p50"].verdict == "improvement"
    assert metrics["latency_p99"].verdict == "no_change"
    assert metrics["latency_p99"].p_value > 0.01


def test_quantile_test_sees_only_its_quantile() -> None:
    bulk = np.linspace(100.0, 200.0, 95)
    tail = np.linspace(5000.0, 6000.0, 5)
    base = np.concatenate([bulk, tail])
    candidate = np.concatenate([bulk * 0.5, tail])
    _, p_median, sign_median = quantile_test(base, candidate, 0.5)
    _, p_tail, sign_tail = quantile_test(base, candidate, 0.99)
    assert (p_median < 1e-6, sign_median) == (True, -1)
    assert (p_tail, sign_tail) == (1.0, 0)


def test_holm_runs_over_every_metric_of_every_prompt() -> None:
    base, candidate = synthetic_pair(PROFILE, PROFILE, items=10, repetitions=2, trial=5, prompts=3)
    comparison = compare_runs(base, candidate)
    metrics = [metric for prompt in comparison.prompts for metric in prompt.metrics]
    assert comparison.family_size == len(metrics) == 33
    expected = adjust_p_values([metric.p_value for metric in metrics], "holm")
    assert [metric.p_adjusted for metric in metrics] == pytest.approx(expected)


def test_welch_and_paired_t_match_scipy() -> None:
    rng = np.random.default_rng(1)
    base, candidate = rng.normal(10, 2, 50), rng.normal(11, 3, 70)
    p_value, sign = welch_test(base, candidate)
    assert p_value == pytest.approx(stats.ttest_ind(candidate, base, equal_var=False).pvalue)
    assert sign == 1
    differences = rng.normal(-0.1, 0.2, 30)
    p_value, sign = paired_t_test(differences)
    assert p_value == pytest.approx(stats.ttest_1samp(differences, 0.0).pvalue)
    assert sign == -1


def test_means_are_tested_paired_by_item_when_the_runs_share_items() -> None:
    base = _run([_call(f"i{n}", 100.0, output_tokens=10 * n) for n in range(6)])
    candidate = _run([_call(f"i{n}", 100.0, output_tokens=10 * n + 3) for n in range(6)])
    elsewhere = _run([_call(f"j{n}", 100.0, output_tokens=10 * n + 3) for n in range(6)])
    paired = next(
        m for m in compare_runs(base, candidate).prompts[0].metrics if m.metric == "output_tokens"
    )
    unpaired = next(
        m for m in compare_runs(base, elsewhere).prompts[0].metrics if m.metric == "output_tokens"
    )
    assert (paired.test, paired.p_value, paired.test_direction) == ("paired-t-by-item", 0.0, 1)
    assert unpaired.test == "welch-t" and unpaired.p_value > 0.5


def test_all_calls_latency_includes_failed_calls() -> None:
    base = _run([_call(f"i{n}", 100.0) for n in range(10)])
    candidate = _run(
        [_call(f"i{n}", 100.0) for n in range(5)]
        + [_call(f"f{n}", 30_000.0, status="error") for n in range(5)]
    )
    prompt = compare_runs(base, candidate).prompts[0]
    by_name = {metric.metric: metric for metric in prompt.metrics}
    assert by_name["latency_p50"].candidate == 100.0
    assert [(q.quantile, q.base_ms) for q in prompt.latency_all_calls] == [
        (0.5, 100.0),
        (0.95, 100.0),
        (0.99, 100.0),
    ]
    assert [q.candidate_ms for q in prompt.latency_all_calls] == [100.0, 30_000.0, 30_000.0]
    assert by_name["latency_p99"].candidate == 100.0


def test_compare_is_deterministic() -> None:
    base, candidate = synthetic_pair(PROFILE, PROFILE, items=10, repetitions=2, trial=4)
    assert compare_runs(base, candidate) == compare_runs(base, candidate)


def test_error_rate_test_depends_on_the_counts() -> None:
    small = synthetic_pair(PROFILE, PROFILE, items=10, repetitions=2, trial=1)
    large = synthetic_pair(
        replace(PROFILE, error_rate=0.2), PROFILE, items=100, repetitions=3, trial=1
    )
    tests = [
        next(m.test for m in compare_runs(*pair).prompts[0].metrics if m.metric == "error_rate")
        for pair in (small, large)
    ]
    assert tests == ["fisher-exact", "two-proportion-z"]


def test_quality_is_paired_over_common_items_only() -> None:
    base = _run([_call(f"i{n}", 100.0, quality_score=0.9, quality_metric="j") for n in range(6)])
    candidate = _run(
        [_call(f"i{n}", 100.0, quality_score=0.5, quality_metric="j") for n in range(3, 9)]
    )
    quality = next(
        m for m in compare_runs(base, candidate).prompts[0].metrics if m.metric == "quality"
    )
    assert (quality.n_base, quality.n_candidate, quality.test) == (3, 3, "paired-t")
    assert quality.change == pytest.approx(-0.4)


def test_quality_with_different_metrics_is_not_compared() -> None:
    base = _run([_call(f"i{n}", 100.0, quality_score=0.9, quality_metric="a") for n in range(4)])
    candidate = _run(
        [_call(f"i{n}", 100.0, quality_score=0.9, quality_metric="b") for n in range(4)]
    )
    prompt = compare_runs(base, candidate).prompts[0]
    assert "quality" not in [metric.metric for metric in prompt.metrics]
    assert prompt.notes == ["quality not compared: different quality metrics (a, b)"]


def test_monthly_cost_uses_the_configured_volume() -> None:
    base = _run([_call(f"i{n}", 100.0, cost_usd=0.001) for n in range(4)], volume=1000)
    candidate = _run([_call(f"i{n}", 100.0, cost_usd=0.002) for n in range(4)])
    cost = compare_runs(base, candidate).prompts[0].monthly_cost
    assert cost is not None
    assert (cost.volume, cost.base_usd, cost.candidate_usd) == (1000, 1.0, 2.0)
    settings = CompareSettings(monthly_volume=10)
    overridden = compare_runs(base, candidate, settings).prompts[0].monthly_cost
    assert overridden is not None and overridden.volume == 10


def test_zero_base_gives_no_relative_change() -> None:
    base = _run([_call(f"i{n}", 0.0) for n in range(30)])
    candidate = _run([_call(f"i{n}", 500.0 + n) for n in range(30)])
    comparison = compare_runs(base, candidate)
    p50 = comparison.prompts[0].metrics[0]
    assert (p50.metric, p50.relative_change, p50.ci_low, p50.verdict) == (
        "latency_p50",
        None,
        None,
        "regression",
    )


def test_equal_zeros_are_no_relative_change() -> None:
    run = _run([_call(f"i{n}", 0.0, output_tokens=0) for n in range(5)])
    metrics = {metric.metric: metric for metric in compare_runs(run, run).prompts[0].metrics}
    assert metrics["latency_p50"].relative_change == 0.0
    assert metrics["output_tokens"].relative_change == 0.0


def test_too_few_calls_skip_the_two_sample_metrics() -> None:
    base = _run([_call("i", 100.0)])
    prompt = compare_runs(base, base).prompts[0]
    assert prompt.metrics == []
    assert prompt.verdict == "no_change"


def _single(prompt_id: str) -> list[CallRecord]:
    return synthetic_run(PROFILE, items=3, repetitions=1, seed=1, prompt_id=prompt_id).prompts[
        prompt_id
    ]


def test_different_suites_and_one_sided_prompts_are_noted() -> None:
    shared = _single("shared")
    base = RunFile(run=_metadata(), prompts={"shared": shared, "gone": _single("gone")})
    candidate = RunFile(
        run=_metadata(suite="other"),
        prompts={"shared": shared, "gone": [], "lonely": _single("lonely")},
    )
    comparison = compare_runs(base, candidate)
    assert comparison.notes == ["different suites: base 's', candidate 'other'"]
    assert [prompt.prompt_id for prompt in comparison.prompts] == ["shared"]
    assert (comparison.only_in_base, comparison.only_in_candidate) == (["gone"], ["lonely"])
