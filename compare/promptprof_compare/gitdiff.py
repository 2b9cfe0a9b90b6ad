"""What ``promptprof ci`` asks git: the repository, the base ref, changed files, old contents."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 60.0


class GitError(Exception):
    """A git command that failed, or a ref or repository that does not exist."""


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
            timeout=GIT_TIMEOUT_S,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH)") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args)} failed ({exc})") from None
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit code {done.returncode}"
        raise GitError(f"git {' '.join(args)}: {message}")
    return done.stdout


def repo_root(path: Path) -> Path:
    """The top directory of the git work tree containing ``path``."""
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip())
    except GitError:
        raise GitError(f"{path} is not inside a git work tree") from None


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` names; a clear :class:`GitError` when it does not exist."""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except GitError:
        raise GitError(
            f"base ref {ref!r} not found in {repo} (fetch it first, e.g. "
            "'git fetch origin main' or actions/checkout with fetch-depth: 0)"
        ) from None


def _names(output: str) -> set[str]:
    return {name for name in output.split("\0") if name}


def changed_files(repo: Path, ref: str) -> list[str]:
    """Paths (relative to ``repo``) changed since ``ref``: committed on this branch since it
    forked from ``ref`` (``ref...HEAD``), staged, unstaged and untracked (not ignored)."""
    committed = _git(repo, "diff", "--name-only", "--no-renames", "-z", f"{ref}...HEAD")
    uncommitted = _git(repo, "diff", "--name-only", "--no-renames", "-z", "HEAD")
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z")
    return sorted(_names(committed) | _names(uncommitted) | _names(untracked))


def show_file(repo: Path, ref: str, path: str) -> str | None:
    """The content of ``path`` at ``ref`` (``git show REF:path``), ``None`` if it did not exist."""
    try:
        _git(repo, "cat-file", "-e", f"{ref}:{path}")
    except GitError:
        return None
    return _git(repo, "show", f"{ref}:{path}")


def head_commit(path: Path) -> str | None:
    """The commit checked out where ``path`` is, with ``+dirty`` for uncommitted changes;
    ``None`` outside a git work tree."""
    try:
        commit = _git(path, "rev-parse", "HEAD").strip()
        dirty = bool(_git(path, "status", "--porcelain", "--untracked-files=no").strip())
    except GitError:
        return None
    return f"{commit}+dirty" if dirty else commit
