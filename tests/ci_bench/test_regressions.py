"""Regressions injected through the simulated provider are reported, exit code 1; A/A is not.

Each scenario runs the bench twice through the Python API (a base suite and the same suite with
one knob of the simulated provider changed, different seeds) and compares the run files with
``compare_command``. Run sizes: 1000 calls (200 items x 5), enough for +30% latency, errors
1% -> 5% and a 0.1 quality drop; 3000 calls for +20% output tokens, whose simulated counts are
exponentially distributed (the standard deviation equals the mean).
"""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from promptprof_compare.cli import EXIT_OK, EXIT_REGRESSION, compare_command
from promptprof_compare.runfile import load_run, save_run
from promptprof_compare.runner import prepare, run_bench
from promptprof_compare.suite import load_suite

from .conftest import make_suite

ITEMS, REPETITIONS = 200, 5
BASE_SEED = 1


def bench_run(root: Path, inject: dict[str, Any], seed: int, items: int = ITEMS) -> Path:
    """Run a suite whose simulated provider has ``inject``; the path of its run file."""
    suite = make_suite(
        root, provider={"type": "simulated", "inject": inject}, items=items,
        repetitions=REPETITIONS,
    )
    run = asyncio.run(run_bench(prepare(load_suite(suite)), seed=seed))
    out = root / "run.json"
    save_run(run, out)
    return out


def regressed(base: Path, candidate: Path, root: Path) -> tuple[int, set[str]]:
    """compare_command's exit code and the metrics its JSON report marks as regressions."""
    report = root / "report.json"
    code = compare_command(base, candidate, None, root / "report.md", None, report)
    data = json.loads(report.read_text())
    metrics = {
        metric["metric"]
        for prompt in data["prompts"]
        for metric in prompt["metrics"]
        if metric["verdict"] == "regression"
    }
    return code, metrics


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base run shared by the scenarios (default simulated model, error rate 1%)."""
    return bench_run(tmp_path_factory.mktemp("base"), {}, BASE_SEED)


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        ({"latency_factor": 1.3}, "latency_p50"),
        ({"error_rate": 0.05}, "error_rate"),
        ({"quality_shift": 0.1}, "quality"),
    ],
    ids=["latency+30%", "errors-1%-to-5%", "quality-drop"],
)
def test_injected_regression_is_reported(
    base_run: Path, tmp_path: Path, inject: dict[str, Any], expected: str
) -> None:
    candidate = bench_run(tmp_path, inject, BASE_SEED + 1)
    code, metrics = regressed(base_run, candidate, tmp_path)
    assert code == EXIT_REGRESSION
    assert expected in metrics


def test_output_tokens_plus_20_percent_is_reported(tmp_path: Path) -> None:
    base = bench_run(tmp_path / "base", {}, BASE_SEED, items=600)
    candidate = bench_run(tmp_path / "candidate", {"output_tokens_factor": 1.2}, 2, items=600)
    code, metrics = regressed(base, candidate, tmp_path)
    assert code == EXIT_REGRESSION
    assert {"output_tokens", "cost_per_call"} <= metrics


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_a_same_configuration_reports_no_regression(
    base_run: Path, tmp_path: Path, seed: int
) -> None:
    candidate = bench_run(tmp_path, {}, seed)
    code, metrics = regressed(base_run, candidate, tmp_path)
    assert (code, metrics) == (EXIT_OK, set())


def test_latency_factor_moves_the_recorded_latency_by_that_factor(
    base_run: Path, tmp_path: Path
) -> None:
    candidate = bench_run(tmp_path, {"latency_factor": 1.3}, BASE_SEED + 1)

    def median_latency(path: Path) -> float:
        records = load_run(path).prompts["answer"]
        return statistics.median(r.latency_ms for r in records if r.status == "ok")

    assert median_latency(candidate) / median_latency(base_run) == pytest.approx(1.3, rel=0.1)
