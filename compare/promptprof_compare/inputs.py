"""Reading the bench's input files (suites, prompts, datasets) with errors that name file and field.

Every problem with a file the user wrote is an :class:`InputError` whose message starts with the
file (or ``REF:path`` for a file read from git) and names the field, so ``promptprof bench`` and
``promptprof ci`` can print it as is and exit with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from promptprof_compare.runfile import describe_errors

M = TypeVar("M", bound=BaseModel)


class InputError(Exception):
    """A bench input that cannot be used; the message names the file and the problem."""

    def __init__(self, source: str | Path, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = str(source)
        self.problem = problem


def read_text(path: Path) -> str:
    """The text of an input file; raise :class:`InputError` when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the file ({exc})") from None


def parse_yaml_mapping(text: str, source: str | Path) -> dict[str, Any]:
    """Parse YAML text that must hold a mapping at the top level."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(source, f"malformed YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise InputError(source, "expected a mapping at the top level")
    return data


def validate(model: type[M], data: Any, source: str | Path) -> M:
    """``model`` validated from ``data``; an :class:`InputError` naming each invalid field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, describe_errors(exc)) from None


def resolve(base_dir: Path, path: str | Path) -> Path:
    """``path`` relative to ``base_dir`` (the directory of the file that names it)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base_dir / candidate
