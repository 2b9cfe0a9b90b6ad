"""``promptprof ci``: benchmark the prompts a branch changed, old against new, and gate on it.

For each suite (``--suite``, else every ``suites/*.yaml`` or ``suites/*.yml`` file git tracks):

1. the changed prompt files are the suite's prompt files (directly in its ``prompt_dir``) that
   ``git diff --name-only REF...HEAD``, the staged and unstaged changes or the untracked files
   name;
2. the base versions are their contents at REF (``git show REF:path``), the candidate versions
   the files in the work tree; prompts are matched by ``id``, so a renamed file still compares;
3. the suite runs for the base prompts (the suite's seed) and for the candidate prompts (the
   seed + 1), with the dataset, provider and evaluators of the work tree, both in one run: by
   default each base call and the candidate call of the same prompt, item and repetition form a
   block of two, blocks and the calls within them in a random order (seeded by the suite's
   seed), so a provider drifting during the run slows both sides alike (``--order sequential``
   makes every base call first, the old order); then
   :func:`~promptprof_compare.cli.compare_command` compares the two runs with the suite's
   ``thresholds`` file. Every metric of every prompt of the suite is one family (Holm); when
   several suites compare prompts in one ci run, each suite's alpha is divided by their number
   (Bonferroni across suites), so the whole run's family-wise error stays within alpha.

``OUT_DIR/<suite>/`` receives ``base.json``, ``candidate.json``, ``report.md``, ``report.html``
and ``report.json``; ``OUT_DIR/report.md`` gathers every suite's Markdown (the pull-request
comment). Exit code: 1 when any suite regressed, 2 on a usage or input error (a missing ref,
a bad suite or prompt file), else 0, also when no prompt changed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from promptprof import Settings
from promptprof_compare.cli import EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, compare_command
from promptprof_compare.gitdiff import (
    GitError,
    changed_files,
    head_commit,
    repo_root,
    resolve_ref,
    show_file,
)
from promptprof_compare.inputs import InputError
from promptprof_compare.order import OrderName
from promptprof_compare.prompts import Prompt, is_prompt_file, load_prompt, parse_prompt, unique
from promptprof_compare.runfile import RunFileError, save_run
from promptprof_compare.runner import RunSide, open_profiler, prepare, run_paired
from promptprof_compare.suite import Suite, load_suite

DEFAULT_OUT_DIR = Path("promptprof-ci")
SUITE_GLOBS = ("suites/*.yaml", "suites/*.yml", "*/suites/*.yaml", "*/suites/*.yml")
REPORT_NAME = "report.md"


@dataclass
class _Git:
    """The repository, the base ref and what changed since it."""

    repo: Path
    ref: str
    commit: str
    changed: list[str]


@dataclass
class _Changes:
    """The changed prompts of one suite: both versions, and those on one side only."""

    base: list[Prompt] = field(default_factory=list)
    candidate: list[Prompt] = field(default_factory=list)

    @property
    def common(self) -> list[str]:
        """Ids of the prompts with a base and a candidate version."""
        base_ids = {prompt.id for prompt in self.base}
        return [prompt.id for prompt in self.candidate if prompt.id in base_ids]

    def only(self, side: list[Prompt]) -> list[str]:
        """Ids of ``side`` that the other side lacks."""
        common = set(self.common)
        return [prompt.id for prompt in side if prompt.id not in common]


def _discover_suites(repo: Path) -> list[Path]:
    found = {path for pattern in SUITE_GLOBS for path in repo.glob(pattern)}
    if not found:
        raise InputError(repo, "no suite given and no suites/*.yaml found: pass --suite")
    return sorted(found)


def _suite_changes(suite: Suite, git: _Git) -> _Changes:
    prompt_dir = suite.prompt_dir.resolve()
    paths = [
        path for path in git.changed
        if is_prompt_file(Path(path)) and (git.repo / path).parent.resolve() == prompt_dir
    ]
    changes = _Changes()
    for path in paths:
        old = show_file(git.repo, git.ref, path)
        if old is not None:
            changes.base.append(parse_prompt(old, f"{git.ref}:{path}"))
        if (git.repo / path).is_file():
            changes.candidate.append(load_prompt(git.repo / path))
    wanted = suite.config.prompts
    if wanted is not None:
        changes.base = [prompt for prompt in changes.base if prompt.id in wanted]
        changes.candidate = [prompt for prompt in changes.candidate if prompt.id in wanted]
    changes.base, changes.candidate = unique(changes.base), unique(changes.candidate)
    return changes


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "suite"


def _run_both(
    base: RunSide, candidate: RunSide, order: OrderName, settings: Settings,
    paths: tuple[Path, Path],
) -> None:
    runs = asyncio.run(run_paired(base, candidate, order=order, profiler=open_profiler(settings)))
    for run, path in zip(runs, paths, strict=True):
        save_run(run, path)


def _side_notes(changes: _Changes) -> list[str]:
    notes = []
    if changes.only(changes.candidate):
        notes.append(f"new prompts, no base version: {', '.join(changes.only(changes.candidate))}")
    if changes.only(changes.base):
        notes.append(f"removed prompts: {', '.join(changes.only(changes.base))}")
    return notes


@dataclass(frozen=True)
class _Plan:
    """What one ci run does: its suites' changes, settings, order and how many suites compare."""

    git: _Git
    out_dir: Path
    settings: Settings
    order: OrderName
    compared_suites: int


def _ci_suite(suite: Suite, changes: _Changes, plan: _Plan) -> tuple[int, str]:
    """Benchmark one suite's changed prompts; the exit code and the Markdown section."""
    git = plan.git
    heading = f"## Suite `{suite.name}`"
    notes = [f"- {note}" for note in _side_notes(changes)]
    notes += [""] if notes else []
    common = changes.common
    if not common:
        return EXIT_OK, "\n".join([heading, "", *notes, "No changed prompt to compare."]) + "\n"
    directory = plan.out_dir / _slug(suite.name)
    directory.mkdir(parents=True, exist_ok=True)
    base, candidate = directory / "base.json", directory / "candidate.json"
    seed = suite.config.seed
    chosen = set(common)
    base_side = RunSide(prepare(suite, [p for p in changes.base if p.id in chosen]), seed,
                        git.commit)
    candidate_side = RunSide(prepare(suite, [p for p in changes.candidate if p.id in chosen]),
                             seed + 1, head_commit(git.repo))
    _run_both(base_side, candidate_side, plan.order, plan.settings, (base, candidate))
    markdown = directory / REPORT_NAME
    code = compare_command(base, candidate, suite.thresholds, markdown,
                           directory / "report.html", directory / "report.json",
                           alpha_shared_by=plan.compared_suites)
    body = markdown.read_text(encoding="utf-8") if code != EXIT_USAGE else "Comparison failed."
    return code, "\n".join([heading, "", *notes, body])


def _worst(codes: list[int]) -> int:
    if EXIT_USAGE in codes:
        return EXIT_USAGE
    return EXIT_REGRESSION if EXIT_REGRESSION in codes else EXIT_OK


def _git_state(base_ref: str) -> _Git:
    repo = repo_root(Path.cwd())
    commit = resolve_ref(repo, base_ref)
    return _Git(repo, base_ref, commit, changed_files(repo, base_ref))


def ci_command(
    base_ref: str, suite: Path | None, out_dir: Path, settings: Settings,
    order: OrderName = "blocked",
) -> int:
    """``promptprof ci --base-ref REF [--suite SUITE] [--out-dir DIR] [--order ORDER]``.

    Run in the repository; ``order`` is how the base and candidate calls are interleaved.
    Returns the exit code: 1 on any regression, 0 otherwise, 2 on a usage or input error.
    """
    try:
        git = _git_state(base_ref)
        suites = [load_suite(path) for path in ([suite] if suite else _discover_suites(git.repo))]
        out_dir.mkdir(parents=True, exist_ok=True)
        changes = [_suite_changes(one, git) for one in suites]
        compared = sum(1 for change in changes if change.common)
        plan = _Plan(git, out_dir, settings, order, max(compared, 1))
        results = [_ci_suite(*pair, plan) for pair in zip(suites, changes, strict=True)]
        report = out_dir / REPORT_NAME
        title = f"# promptprof: prompts changed since `{base_ref}`"
        report.write_text("\n".join([title, "", *(text for _, text in results)]), "utf-8")
    except (GitError, InputError, RunFileError, OSError) as exc:
        print(f"promptprof ci: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"promptprof ci: wrote {report}")
    return _worst([code for code, _ in results])
