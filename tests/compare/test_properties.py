"""Properties: a run compared with itself never regresses; swapping the runs swaps the verdicts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptprof_compare.runfile import CallRecord, RunFile, RunMetadata
from promptprof_compare.stats import CompareSettings, Comparison, Verdict, compare_runs
from promptprof_compare.synthetic import SyntheticProfile, synthetic_pair

SWAPPED: dict[Verdict, Verdict] = {
    "regression": "improvement",
    "improvement": "regression",
    "no_change": "no_change",
}
FAST = CompareSettings(n_resamples=200)
METADATA = RunMetadata(suite="s", started_at=datetime(2026, 1, 1, tzinfo=UTC), provider="x", seed=0)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def calls(draw: st.DrawFn) -> CallRecord:
    """One call with edge values likely: zeros, ties, errors, missing optional fields."""
    failed = draw(st.booleans())
    score = draw(st.none() | st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1))
    return CallRecord(
        item_id=draw(st.sampled_from(["a", "b", "c", "d", "e"])),
        repetition=draw(st.integers(0, 2)),
        prompt_id="p",
        prompt_version="v1",
        model="m",
        latency_ms=draw(st.sampled_from([0.0, 100.0, 5000.0]) | st.floats(0, 1e5)),
        ttft_ms=draw(st.none() | st.floats(0, 1e4)),
        input_tokens=draw(st.integers(0, 2000)),
        output_tokens=draw(st.integers(0, 2000)),
        cost_usd=draw(st.none() | st.floats(0, 1)),
        status="error" if failed else "ok",
        quality_score=score,
        quality_metric=None if score is None else "judge",
    )


runs = st.lists(calls(), min_size=1, max_size=40).map(
    lambda records: RunFile(run=METADATA, prompts={"p": records})
)


def _verdicts(comparison: Comparison) -> dict[str, Verdict]:
    return {metric.metric: metric.verdict for metric in comparison.prompts[0].metrics}


def _p_values(comparison: Comparison) -> dict[str, float]:
    return {metric.metric: metric.p_adjusted for metric in comparison.prompts[0].metrics}


@PROPERTY_SETTINGS
@given(run=runs)
def test_a_run_compared_with_itself_changes_nothing(run: RunFile) -> None:
    comparison = compare_runs(run, run, FAST)
    assert comparison.verdict == "no_change"
    assert all(metric.change == 0 for metric in comparison.prompts[0].metrics)


@PROPERTY_SETTINGS
@given(base=runs, candidate=runs)
def test_swapping_the_runs_swaps_the_verdicts(base: RunFile, candidate: RunFile) -> None:
    forward, backward = compare_runs(base, candidate, FAST), compare_runs(candidate, base, FAST)
    assert _verdicts(backward) == {
        name: SWAPPED[verdict] for name, verdict in _verdicts(forward).items()
    }
    assert _p_values(backward) == pytest.approx(_p_values(forward), rel=1e-9)


@PROPERTY_SETTINGS
@given(
    trial=st.integers(0, 10_000),
    latency=st.floats(0.5, 2.0),
    tokens=st.floats(0.5, 2.0),
    error_rate=st.floats(0.0, 0.3),
    quality_shift=st.floats(-0.2, 0.2),
)
def test_swap_symmetry_on_realistic_runs(
    trial: int, latency: float, tokens: float, error_rate: float, quality_shift: float
) -> None:
    profile = SyntheticProfile()
    changed = SyntheticProfile(
        latency_factor=latency,
        output_tokens_factor=tokens,
        error_rate=error_rate,
        quality_shift=quality_shift,
    )
    base, candidate = synthetic_pair(profile, changed, items=12, repetitions=2, trial=trial)
    forward, backward = compare_runs(base, candidate, FAST), compare_runs(candidate, base, FAST)
    assert _verdicts(backward) == {
        name: SWAPPED[verdict] for name, verdict in _verdicts(forward).items()
    }
