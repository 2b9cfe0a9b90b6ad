"""Reports: Markdown for pull requests, stable JSON, self-contained HTML."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from promptprof_compare.report import (
    format_change,
    format_interval,
    format_p,
    render_html,
    render_json,
    render_markdown,
    summary_line,
)
from promptprof_compare.runfile import RunFile
from promptprof_compare.stats import Comparison, compare_runs
from promptprof_compare.synthetic import BASE_PROFILE, synthetic_pair

EXTERNAL_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def runs() -> tuple[RunFile, RunFile]:
    slower = replace(BASE_PROFILE, latency_factor=1.5, prompt_version="v2")
    base, candidate = synthetic_pair(BASE_PROFILE, slower, items=40, repetitions=3, trial=0)
    metadata = base.run.model_copy(update={"monthly_volume": 1_000_000, "git_ref": "abc123"})
    return RunFile(run=metadata, prompts=base.prompts), candidate


@pytest.fixture(scope="module")
def comparison(runs: tuple[RunFile, RunFile]) -> Comparison:
    return compare_runs(*runs)


def test_markdown_starts_with_the_verdict_and_has_a_table(comparison: Comparison) -> None:
    markdown = render_markdown(comparison)
    first = markdown.splitlines()[0]
    assert first.startswith("**promptprof compare: regression** in 1 of 1 prompt: `synthetic`")
    assert "latency p50" in first
    assert "| metric | base | candidate | change | interval | p (corrected) | verdict |" in markdown
    assert "| latency p50 (successful calls) |" in markdown
    assert "Latency over all calls, failed ones included" in markdown
    assert "version v1 → v2" in markdown and "quality scored by judge" in markdown
    assert "Monthly cost at 1,000,000 calls:" in markdown
    assert "git `abc123`" in markdown
    assert "Holm correction over a family of 11 tests" in markdown


def test_markdown_uses_words_not_emoji(comparison: Comparison) -> None:
    markdown = render_markdown(comparison)
    assert markdown.isascii() or set(markdown) - set(map(chr, range(128))) <= {"→"}
    assert "no change" in markdown and "regression" in markdown


def test_summary_without_regression() -> None:
    base, candidate = synthetic_pair(BASE_PROFILE, BASE_PROFILE, items=10, repetitions=2, trial=1)
    line = summary_line(compare_runs(base, candidate))
    assert line == "**promptprof compare: no regression**, no significant change (1 prompt)."


def test_summary_with_improvement() -> None:
    faster = replace(BASE_PROFILE, latency_factor=0.5)
    base, candidate = synthetic_pair(BASE_PROFILE, faster, items=40, repetitions=3, trial=1)
    line = summary_line(compare_runs(base, candidate))
    assert line.startswith("**promptprof compare: no regression**, improvement in `synthetic`")


def test_formatting_of_changes_and_p_values(comparison: Comparison) -> None:
    metrics = {metric.metric: metric for metric in comparison.prompts[0].metrics}
    assert re.fullmatch(r"\+\d+\.\d%", format_change(metrics["latency_p50"]))
    assert re.fullmatch(r"[+-]\d+\.\d% to [+-]\d+\.\d%", format_interval(metrics["latency_p50"]))
    assert format_change(metrics["error_rate"]).endswith(" pp")
    assert re.fullmatch(r"[+-]\d\.\d{3}", format_change(metrics["quality"]))
    assert format_p(0.00001) == "< 0.0001"
    assert format_p(0.5) == "0.5000"


def test_json_is_stable_and_machine_readable(comparison: Comparison) -> None:
    text = render_json(comparison)
    assert text == render_json(comparison)
    data = json.loads(text)
    assert list(data) == [
        "schema_version",
        "verdict",
        "alpha",
        "correction",
        "family_size",
        "confidence",
        "base_run",
        "candidate_run",
        "prompts",
        "only_in_base",
        "only_in_candidate",
        "notes",
    ]
    metric = data["prompts"][0]["metrics"][0]
    assert list(metric) == [
        "metric",
        "label",
        "unit",
        "direction",
        "base",
        "candidate",
        "change",
        "relative_change",
        "interval_kind",
        "ci_low",
        "ci_high",
        "test",
        "test_direction",
        "p_value",
        "p_adjusted",
        "n_base",
        "n_candidate",
        "threshold",
        "verdict",
    ]
    assert Comparison.model_validate_json(text) == comparison


def test_html_is_self_contained(comparison: Comparison, runs: tuple[RunFile, RunFile]) -> None:
    page = render_html(comparison, *runs)
    assert page.startswith("<!DOCTYPE html>")
    assert not EXTERNAL_REFERENCE.search(page)
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 2
    assert "<table>" in page and "latency p50" in page


def test_html_escapes_prompt_ids(runs: tuple[RunFile, RunFile]) -> None:
    base, candidate = (
        RunFile(
            run=run.run,
            prompts={
                "<b>x</b>": [
                    record.model_copy(update={"prompt_id": "<b>x</b>"})
                    for record in run.prompts["synthetic"]
                ]
            },
        )
        for run in runs
    )
    page = render_html(compare_runs(base, candidate), base, candidate)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
