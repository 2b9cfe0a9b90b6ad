"""compare_command: exit codes 0/1/2, reports written, clear messages on bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from promptprof_compare.cli import EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, compare_command
from promptprof_compare.runfile import RunFile, save_run
from promptprof_compare.synthetic import BASE_PROFILE, synthetic_pair, synthetic_run


def _save(tmp_path: Path, name: str, run: RunFile) -> Path:
    path = tmp_path / name
    save_run(run, path)
    return path


def _pair(tmp_path: Path, latency_factor: float) -> tuple[Path, Path]:
    candidate = replace(BASE_PROFILE, latency_factor=latency_factor)
    base, changed = synthetic_pair(BASE_PROFILE, candidate, items=40, repetitions=3, trial=2)
    return _save(tmp_path, "base.json", base), _save(tmp_path, "candidate.json", changed)


def _run(base: Path, candidate: Path, thresholds: Path | None = None) -> int:
    return compare_command(base, candidate, thresholds, None, None, None)


def test_no_regression_exits_0_and_prints_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(*_pair(tmp_path, 1.0)) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.startswith("**promptprof compare: no regression**")
    assert err == ""


def test_regression_exits_1_and_writes_every_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, candidate = _pair(tmp_path, 1.5)
    outputs = [tmp_path / name for name in ("report.md", "report.html", "report.json")]
    assert compare_command(base, candidate, None, *outputs) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert outputs[0].read_text(encoding="utf-8") == out
    assert outputs[1].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert json.loads(outputs[2].read_text(encoding="utf-8"))["verdict"] == "regression"


def test_thresholds_file_can_tolerate_the_change(tmp_path: Path) -> None:
    base, candidate = _pair(tmp_path, 1.5)
    thresholds = tmp_path / "thresholds.yaml"
    latency = "{relative: 1.0}"
    thresholds.write_text(
        "metrics:\n"
        + "".join(
            f"  {name}: {latency}\n" for name in ("latency_p50", "latency_p95", "latency_p99")
        )
        + "".join(f"  {name}: {latency}\n" for name in ("ttft_p50", "ttft_p95", "ttft_p99")),
        encoding="utf-8",
    )
    assert _run(base, candidate, thresholds) == EXIT_OK


def _error_of(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("promptprof compare: error: ")
    return err


def test_missing_base_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, candidate = _pair(tmp_path, 1.0)
    assert _run(tmp_path / "nope.json", candidate) == EXIT_USAGE
    assert "nope.json: file not found (the base run file)" in _error_of(capsys)


def test_malformed_candidate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, candidate = _pair(tmp_path, 1.0)
    candidate.write_text("{not json", encoding="utf-8")
    assert _run(base, candidate) == EXIT_USAGE
    assert "candidate.json: malformed JSON at line 1 column 2" in _error_of(capsys)


def test_invalid_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, candidate = _pair(tmp_path, 1.0)
    candidate.write_text(json.dumps({"run": {"suite": "s"}, "prompts": {}}), encoding="utf-8")
    assert _run(base, candidate) == EXIT_USAGE
    assert "run.started_at: Field required" in _error_of(capsys)


def test_no_prompt_in_common(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _save(tmp_path, "a.json", synthetic_run(BASE_PROFILE, items=3, repetitions=1, seed=1))
    other = synthetic_run(BASE_PROFILE, items=3, repetitions=1, seed=2, prompt_id="other")
    candidate = _save(tmp_path, "b.json", other)
    assert _run(base, candidate) == EXIT_USAGE
    err = _error_of(capsys)
    assert "cannot compare" in err and "no prompt with calls in both" in err


def test_bad_thresholds_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, candidate = _pair(tmp_path, 1.0)
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("alpha: 0\n", encoding="utf-8")
    assert _run(base, candidate, thresholds) == EXIT_USAGE
    assert "t.yaml: invalid thresholds: alpha: Input should be greater than 0" in _error_of(capsys)


def test_unwritable_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, candidate = _pair(tmp_path, 1.0)
    target = tmp_path / "missing" / "report.json"
    assert compare_command(base, candidate, None, None, None, target) == EXIT_USAGE
    assert "report.json: cannot write the report" in _error_of(capsys)
