"""The default thresholds and alpha: few false regressions, injected changes caught.

Seeded synthetic trials (see promptprof_compare.synthetic); bench/ci_compare.py measures the same
rates with more trials and reports the run sizes each change needs.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from promptprof_compare.synthetic import (
    A_A,
    BASE_PROFILE,
    DRIFT,
    DRIFT_SEQUENTIAL,
    FAMILY,
    MIXED_SHIFT,
    SCENARIOS,
    Scenario,
    flagged,
)

A_A_TRIALS = 100
MAX_FALSE_REGRESSIONS = 5
DETECTION_TRIALS = 20
MIN_DETECTED = 18


def test_a_a_runs_rarely_report_a_regression() -> None:
    false_regressions = sum(flagged(A_A, trial) for trial in range(A_A_TRIALS))
    assert false_regressions <= MAX_FALSE_REGRESSIONS


@pytest.mark.parametrize(
    ("scenario", "trials"),
    [(MIXED_SHIFT, 10), (DRIFT, 30), (FAMILY, 6)],
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_no_change_scenarios_rarely_report_a_regression(scenario: Scenario, trials: int) -> None:
    """A faster bulk with the same tail, provider drift in ci's order, ten prompts at once."""
    assert sum(flagged(scenario, trial) for trial in range(trials)) <= 1


def test_drift_with_the_sequential_order_does_look_like_a_regression() -> None:
    """Why ci interleaves: the same drift, base calls all first, is often called a regression."""
    assert sum(flagged(DRIFT_SEQUENTIAL, trial) for trial in range(30)) >= 2


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.name)
def test_injected_change_is_detected(scenario: Scenario) -> None:
    detected = sum(flagged(scenario, trial) for trial in range(DETECTION_TRIALS))
    assert detected >= MIN_DETECTED, f"{scenario.name}: {detected}/{DETECTION_TRIALS}"


def test_a_change_under_the_threshold_is_not_a_median_regression() -> None:
    """+5% latency is real but under the 10% threshold: the median is not called a regression.

    (Tail quantiles of a few hundred calls are noisier: their point estimate can overshoot the
    threshold when the whole distribution moved a little; see the module docstring of stats.)
    """
    small = Scenario(
        "latency_5pct",
        replace(BASE_PROFILE, latency_factor=1.05),
        frozenset({"latency_p50"}),
        items=200,
        repetitions=5,
    )
    assert not any(flagged(small, trial) for trial in range(10))
