"""Benchmark: how often ``promptprof compare`` (default alpha and thresholds) cries wolf, and how
often it catches real changes, on seeded synthetic runs (:mod:`promptprof_compare.synthetic`).

- False regressions: A/A trials (same configuration, one dataset, two seeds) that report any
  regression, at 40 items x 3 repetitions (120 calls per run) and at 1000 calls per run.
- ``false_regression_rate_mixed_shift``: the bulk of the calls 20 % faster, the slowest 3 %
  (which hold p99) unchanged, 1000 calls per run; any regression verdict counts.
- ``false_regression_rate_drift``: A/A while the provider gets 30 % slower linearly from the
  first call to the last, the calls made in ``promptprof ci``'s order (randomised blocks,
  :func:`promptprof_compare.order.call_order`); ``false_regression_rate_drift_sequential`` is
  the same with the old order (all base calls, then all candidate calls).
- ``family_false_regression_rate_10_prompts``: A/A over ten prompts compared in one run; a run
  with any regression counts.
- Detection: trials where the injected change is reported as a regression of its metric: +30%
  latency, +20% output tokens, error rate 1% -> 5%, quality drop of 0.1. Each is measured at the
  run size it is claimed at (``calls_per_run_*``) and at the smaller sizes of a grid (60, 120,
  240, 500, 750, 1000 calls per run), giving ``min_calls_for_90pct_*``, the smallest grid size
  with a detection rate of at least 0.9.

Trials run in a process pool (one process per core). ``--quick`` runs fewer trials, same method.
Usage: ``.venv/bin/python bench/ci_compare.py [--quick]``; one JSON line on stdout, logs on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from promptprof_compare.synthetic import (
    A_A,
    DRIFT,
    DRIFT_SEQUENTIAL,
    FAMILY,
    MIXED_SHIFT,
    NO_CHANGE_SCENARIOS,
    SCENARIOS,
    Scenario,
    flagged,
)

log = logging.getLogger("ci_compare")
GRID = ((20, 3), (40, 3), (60, 4), (100, 5), (150, 5), (200, 5))
LARGE_A_A = (200, 5)
TARGET_RATE = 0.9
BY_NAME = {scenario.name: scenario for scenario in (*NO_CHANGE_SCENARIOS, *SCENARIOS)}


@dataclass(frozen=True)
class Trials:
    """How many trials each measurement gets."""

    a_a: int
    a_a_large: int
    detection: int
    mixed_shift: int
    drift: int
    drift_sequential: int
    family: int

    def of(self, scenario: Scenario) -> int:
        """Trials of a no-change scenario other than the plain A/A."""
        counts = {
            MIXED_SHIFT.name: self.mixed_shift,
            DRIFT.name: self.drift,
            DRIFT_SEQUENTIAL.name: self.drift_sequential,
            FAMILY.name: self.family,
        }
        return counts[scenario.name]


FULL = Trials(
    a_a=400,
    a_a_large=100,
    detection=200,
    mixed_shift=200,
    drift=400,
    drift_sequential=100,
    family=200,
)
QUICK = Trials(
    a_a=100, a_a_large=20, detection=30, mixed_shift=30, drift=60, drift_sequential=20, family=30
)
FALSE_RATE_FIGURES = {
    MIXED_SHIFT.name: "false_regression_rate_mixed_shift",
    DRIFT.name: "false_regression_rate_drift",
    DRIFT_SEQUENTIAL.name: "false_regression_rate_drift_sequential",
    FAMILY.name: "family_false_regression_rate_10_prompts",
}


@dataclass(frozen=True)
class Task:
    """One seeded trial of one scenario at one run size."""

    scenario: str
    items: int
    repetitions: int
    trial: int


def run_task(task: Task) -> bool:
    """Whether the trial was flagged (detected, or a false regression for A/A)."""
    scenario = BY_NAME[task.scenario]
    return flagged(scenario, task.trial, items=task.items, repetitions=task.repetitions)


def sizes(scenario: Scenario) -> list[tuple[int, int]]:
    """The grid sizes up to the scenario's claimed size, which is always included."""
    claimed = (scenario.items, scenario.repetitions)
    smaller = [size for size in GRID if size[0] * size[1] < scenario.calls]
    return [*smaller, claimed]


def plan(trials: Trials) -> list[Task]:
    """Every trial to run."""
    tasks = [Task(A_A.name, A_A.items, A_A.repetitions, trial) for trial in range(trials.a_a)]
    tasks += [Task(A_A.name, *LARGE_A_A, trial) for trial in range(trials.a_a_large)]
    for scenario in (MIXED_SHIFT, DRIFT, DRIFT_SEQUENTIAL, FAMILY):
        tasks += [
            Task(scenario.name, scenario.items, scenario.repetitions, trial)
            for trial in range(trials.of(scenario))
        ]
    for scenario in SCENARIOS:
        for items, repetitions in sizes(scenario):
            tasks += [
                Task(scenario.name, items, repetitions, trial) for trial in range(trials.detection)
            ]
    return tasks


def rates(tasks: list[Task], outcomes: list[bool]) -> dict[tuple[str, int], float]:
    """Flagged fraction per (scenario, calls per run)."""
    counts: dict[tuple[str, int], list[int]] = {}
    for task, outcome in zip(tasks, outcomes, strict=True):
        tally = counts.setdefault((task.scenario, task.items * task.repetitions), [0, 0])
        tally[0] += outcome
        tally[1] += 1
    return {key: round(hits / total, 4) for key, (hits, total) in counts.items()}


def figures(measured: dict[tuple[str, int], float], trials: Trials) -> dict[str, float]:
    """The result line's figures."""
    large_calls = LARGE_A_A[0] * LARGE_A_A[1]
    result: dict[str, float] = {
        "false_regression_rate": measured[(A_A.name, A_A.calls)],
        "calls_per_run_a_a": A_A.calls,
        "a_a_trials": trials.a_a,
        f"false_regression_rate_at_{large_calls}_calls": measured[(A_A.name, large_calls)],
        "detection_trials": trials.detection,
    }
    for scenario in (MIXED_SHIFT, DRIFT, DRIFT_SEQUENTIAL, FAMILY):
        result[FALSE_RATE_FIGURES[scenario.name]] = measured[(scenario.name, scenario.calls)]
        result[f"{FALSE_RATE_FIGURES[scenario.name]}_trials"] = trials.of(scenario)
    for scenario in SCENARIOS:
        result[f"detection_rate_{scenario.name}"] = measured[(scenario.name, scenario.calls)]
        result[f"calls_per_run_{scenario.name}"] = scenario.calls
        sweep = sorted(
            (calls, rate) for (name, calls), rate in measured.items() if name == scenario.name
        )
        for calls, rate in sweep:
            result[f"detection_rate_{scenario.name}_at_{calls}_calls"] = rate
        enough = [calls for calls, rate in sweep if rate >= TARGET_RATE]
        if enough:
            result[f"min_calls_for_90pct_{scenario.name}"] = enough[0]
    return result


def main() -> None:
    """Run the trials and print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (under a minute)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    trials = QUICK if args.quick else FULL
    tasks = plan(trials)
    workers = os.cpu_count() or 1
    log.info("running %d trials on %d processes", len(tasks), workers)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(run_task, tasks, chunksize=4))
    result = figures(rates(tasks, outcomes), trials)
    result["seconds"] = round(time.perf_counter() - started, 1)
    log.info("done in %.1f s", result["seconds"])
    print(json.dumps({"bench": "ci_compare", **result}), flush=True)


if __name__ == "__main__":
    main()
