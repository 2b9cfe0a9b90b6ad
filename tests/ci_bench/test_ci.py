"""promptprof ci in a temporary git repository: changed prompts are benchmarked old vs new."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptprof_compare import runner
from promptprof_compare.ci import ci_command
from promptprof_compare.cli import EXIT_OK, EXIT_REGRESSION, EXIT_USAGE
from promptprof_compare.order import OrderName
from promptprof_compare.providers import Backend, Request, open_backend
from promptprof_compare.runfile import load_run

from .conftest import PROMPT, make_suite, offline_settings, write_yaml

SIMULATED = {
    "type": "simulated",
    "models": {
        "quick-model": {"latency_median_ms": 200},
        "fast-model": {"latency_median_ms": 500},
        "slow-model": {"latency_median_ms": 1500},
    },
}
ANSWER = {**PROMPT, "model": "fast-model", "version": "v1"}
OTHER = {**PROMPT, "id": "other", "model": "fast-model", "template": "Explain {topic}."}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` as a throwaway identity."""
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose ``main`` has a suite with two prompts; the work tree on ``feature``."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    make_suite(root, prompt_files=[ANSWER, OTHER], items=30, repetitions=4, provider=SIMULATED)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "feature")
    monkeypatch.chdir(root)
    return root


def edit_prompt(repo: Path, **changes: Any) -> None:
    """Rewrite prompts/answer.yaml with ``changes``."""
    write_yaml(repo / "prompts" / "answer.yaml", {**ANSWER, **changes})


def ci(
    repo: Path, ref: str = "main", suite: str | None = "suite.yaml", order: OrderName = "blocked"
) -> int:
    """ci_command with the test's suite, reports in repo/out."""
    suite_path = Path(suite) if suite else None
    return ci_command(ref, suite_path, repo / "out", offline_settings(), order)


def record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """(prompt version, item, repetition) of every call ci makes, in the order it starts them."""
    started: list[tuple[str, str, int]] = []

    def recording(*args: Any) -> Backend:
        backend = open_backend(*args)
        complete = backend.complete

        async def complete_and_record(request: Request) -> str:
            started.append((request.prompt.version, request.item.id, request.repetition))
            return await complete(request)

        monkeypatch.setattr(backend, "complete", complete_and_record)
        return backend

    monkeypatch.setattr(runner, "open_backend", recording)
    return started


def test_ci_interleaves_base_and_candidate_calls_in_shuffled_pairs(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = record_calls(monkeypatch)
    edit_prompt(repo, version="v2")
    assert ci(repo) == EXIT_OK
    pairs = [started[index : index + 2] for index in range(0, len(started), 2)]
    assert len(pairs) == 30 * 4
    assert all({a[0], b[0]} == {"v1", "v2"} and a[1:] == b[1:] for a, b in pairs)
    items_in_order = [pair[0][1:] for pair in pairs]
    assert items_in_order != sorted(items_in_order)  # the pairs are shuffled
    assert [pair[0][0] for pair in pairs].count("v2") not in (0, len(pairs))  # and within pairs


def test_sequential_order_makes_every_base_call_first(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = record_calls(monkeypatch)
    edit_prompt(repo, version="v2")
    assert ci(repo, order="sequential") == EXIT_OK
    assert [version for version, *_ in started] == ["v1"] * 120 + ["v2"] * 120


def test_committed_slower_prompt_is_a_regression(repo: Path) -> None:
    edit_prompt(repo, model="slow-model", version="v2")
    git(repo, "commit", "-q", "-am", "slower model")
    assert ci(repo) == EXIT_REGRESSION
    report = (repo / "out" / "report.md").read_text()
    assert report.startswith("# promptprof: prompts changed since `main`")
    assert "## Suite `suite`" in report and "**promptprof compare: regression**" in report
    base = load_run(repo / "out" / "suite" / "base.json")
    candidate = load_run(repo / "out" / "suite" / "candidate.json")
    assert set(base.prompts) == set(candidate.prompts) == {"answer"}  # `other` did not change
    assert {r.prompt_version for r in base.prompts["answer"]} == {"v1"}
    assert {r.model for r in candidate.prompts["answer"]} == {"slow-model"}
    assert base.run.git_ref == git(repo, "rev-parse", "main").strip()
    for name in ("report.md", "report.html", "report.json"):
        assert (repo / "out" / "suite" / name).is_file()


def test_uncommitted_change_is_compared(repo: Path) -> None:
    edit_prompt(repo, model="slow-model", version="v2")  # not committed
    assert ci(repo) == EXIT_REGRESSION


def test_faster_prompt_passes(repo: Path) -> None:
    write_yaml(repo / "prompts" / "other.yaml", {**OTHER, "model": "quick-model"})
    assert ci(repo) == EXIT_OK
    assert "compare: no regression" in (repo / "out" / "report.md").read_text()


def test_no_prompt_changed(repo: Path) -> None:
    (repo / "README.md").write_text("docs only\n")
    assert ci(repo) == EXIT_OK
    assert "No changed prompt to compare." in (repo / "out" / "report.md").read_text()
    assert not (repo / "out" / "suite").exists()


def test_new_and_removed_prompts_are_listed(repo: Path) -> None:
    write_yaml(repo / "prompts" / "fresh.yaml", {**PROMPT, "id": "fresh"})
    git(repo, "rm", "-q", "prompts/other.yaml")
    assert ci(repo) == EXIT_OK
    report = (repo / "out" / "report.md").read_text()
    assert "new prompts, no base version: fresh" in report
    assert "removed prompts: other" in report


def test_renamed_prompt_file_is_matched_by_id(repo: Path) -> None:
    git(repo, "mv", "prompts/answer.yaml", "prompts/renamed.yaml")
    write_yaml(repo / "prompts" / "renamed.yaml", {**ANSWER, "model": "slow-model"})
    assert ci(repo) == EXIT_REGRESSION


def test_suites_are_found_without_suite_option(repo: Path) -> None:
    suite = yaml.safe_load((repo / "suite.yaml").read_text())
    write_yaml(repo / "suites" / "found.yaml",
               {**suite, "name": "found", "prompt_dir": "../prompts", "dataset": "../data.jsonl"})
    edit_prompt(repo, model="slow-model")
    assert ci(repo, suite=None) == EXIT_REGRESSION
    assert "## Suite `found`" in (repo / "out" / "report.md").read_text()


def test_suites_compared_in_one_run_share_alpha(repo: Path) -> None:
    suite = yaml.safe_load((repo / "suite.yaml").read_text())
    write_yaml(repo / "suites" / "one.yaml",
               {**suite, "name": "one", "prompt_dir": "../prompts", "dataset": "../data.jsonl"})
    write_yaml(repo / "suites" / "two.yaml",
               {**suite, "name": "two", "prompt_dir": "../prompts", "dataset": "../data.jsonl"})
    edit_prompt(repo, version="v2")
    assert ci(repo, suite=None) == EXIT_OK
    for name in ("one", "two"):
        report = json.loads((repo / "out" / name / "report.json").read_text())
        assert report["alpha"] == pytest.approx(0.005)
        assert "alpha 0.01 is shared by the 2 comparisons of this run: each uses 0.005" in (
            report["notes"]
        )


def test_missing_ref_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci(repo, ref="no-such-branch") == EXIT_USAGE
    assert "base ref 'no-such-branch' not found" in capsys.readouterr().err


def test_bad_inputs_are_usage_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci(repo, suite="missing.yaml") == EXIT_USAGE
    assert "missing.yaml: file not found" in capsys.readouterr().err
    (repo / "prompts" / "answer.yaml").write_text("id: answer\n")
    assert ci(repo) == EXIT_USAGE
    assert "answer.yaml: model: Field required" in capsys.readouterr().err


def test_outside_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ci_command("main", None, tmp_path / "out", offline_settings()) == EXIT_USAGE
    assert "is not inside a git work tree" in capsys.readouterr().err
