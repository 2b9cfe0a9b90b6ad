"""``promptprof compare``: compare a candidate run file with a base run file and gate CI.

Exit codes: 0 when nothing regressed, 1 on any regression, 2 on a usage or input error (missing
or malformed file, invalid thresholds, runs with no prompt in common), with the reason on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from promptprof_compare.report import render_html, render_json, render_markdown
from promptprof_compare.runfile import RunFile, RunFileError, load_run
from promptprof_compare.stats import (
    CompareError,
    CompareSettings,
    Comparison,
    ThresholdsError,
    compare_runs,
    load_settings,
)

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2


class OutputError(Exception):
    """A report file that could not be written."""


def _load_run(role: str, path: Path) -> RunFile:
    try:
        return load_run(path)
    except RunFileError as exc:
        raise RunFileError(exc.path, f"{exc.problem} (the {role} run file)") from None


def _write(path: Path | None, text: str) -> None:
    if path is None:
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def _print_markdown(markdown: str) -> None:
    if sys.stdout.isatty():
        Console().print(Markdown(markdown))
    else:
        sys.stdout.write(markdown)


def _compare(
    base: Path, candidate: Path, thresholds: Path | None, alpha_shared_by: int
) -> tuple[Comparison, RunFile, RunFile]:
    settings = load_settings(thresholds) if thresholds is not None else CompareSettings()
    if alpha_shared_by > 1:
        settings = settings.model_copy(update={"alpha": settings.alpha / alpha_shared_by})
    base_run = _load_run("base", base)
    candidate_run = _load_run("candidate", candidate)
    try:
        comparison = compare_runs(base_run, candidate_run, settings)
    except CompareError as exc:
        raise CompareError(f"cannot compare {base} with {candidate}: {exc}") from None
    if alpha_shared_by > 1:
        note = (
            f"alpha {settings.alpha * alpha_shared_by:g} is shared by the {alpha_shared_by} "
            f"comparisons of this run: each uses {settings.alpha:g}"
        )
        comparison = comparison.model_copy(update={"notes": [*comparison.notes, note]})
    return comparison, base_run, candidate_run


def compare_command(
    base: Path,
    candidate: Path,
    thresholds: Path | None,
    markdown_out: Path | None,
    html_out: Path | None,
    json_out: Path | None,
    *,
    alpha_shared_by: int = 1,
) -> int:
    """Compare two run files, print the Markdown report, write the requested reports.

    ``alpha_shared_by`` > 1 divides the thresholds' alpha by it (several comparisons of one ci
    run sharing one family-wise error). Returns the process exit code: 1 on any regression, 0
    otherwise, 2 on usage or input errors.
    """
    try:
        comparison, base_run, candidate_run = _compare(base, candidate, thresholds, alpha_shared_by)
        markdown = render_markdown(comparison)
        _write(markdown_out, markdown)
        _write(json_out, render_json(comparison))
        if html_out is not None:
            _write(html_out, render_html(comparison, base_run, candidate_run))
    except (RunFileError, ThresholdsError, CompareError, OutputError) as exc:
        print(f"promptprof compare: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_markdown(markdown)
    return EXIT_REGRESSION if comparison.verdict == "regression" else EXIT_OK
