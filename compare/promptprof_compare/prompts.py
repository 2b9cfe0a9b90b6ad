"""Prompt files: a template with its version, model, provider and parameters, kept in the repo.

A prompt file is YAML::

    id: support_reply                 # the prompt's identity across versions
    version: v3                       # optional: defaults to a hash of system + template
    model: gpt-4o-mini
    provider: openai                  # optional: the vendor whose prices apply
    params: {temperature: 0.2, max_tokens: 300}   # client options; others go in the body
    system: You are a support agent.  # optional system message
    template: |
      Customer {customer} wrote: {message}

``{name}`` is replaced by the dataset item's input ``name``; ``{{`` and ``}}`` are literal
braces, and braces around anything that is not a name (JSON examples) are left alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from promptprof_compare.inputs import InputError, parse_yaml_mapping, read_text, validate

PROMPT_SUFFIXES = (".yaml", ".yml")
VERSION_HASH_CHARS = 12
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ESCAPES = {"{{": "{", "}}": "}"}


class PromptFile(BaseModel):
    """What a prompt file holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:/-]+$")
    version: str | None = Field(default=None, min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    provider: str | None = Field(default=None, min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    system: str | None = None
    template: str = Field(min_length=1)


@dataclass(frozen=True)
class Rendered:
    """A prompt rendered for one dataset item."""

    system: str | None
    user: str

    @property
    def text(self) -> str:
        """System and user text together (for token estimates and judges)."""
        return f"{self.system}\n{self.user}" if self.system else self.user


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt: the file's content with its version resolved, and where it came from."""

    id: str
    version: str
    model: str
    provider: str | None
    params: Mapping[str, Any]
    system: str | None
    template: str
    source: str
    placeholders: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = template_names(self.template) | template_names(self.system or "")
        object.__setattr__(self, "placeholders", frozenset(names))

    def render(self, variables: Mapping[str, Any]) -> Rendered:
        """The system and user messages for ``variables`` (every placeholder must be there)."""
        system = render_template(self.system, variables) if self.system else None
        return Rendered(system, render_template(self.template, variables))


def template_names(template: str) -> set[str]:
    """The ``{name}`` placeholders of a template."""
    return {match.group(1) for match in _PLACEHOLDER.finditer(template) if match.group(1)}


def render_template(template: str, variables: Mapping[str, Any]) -> str:
    """Replace ``{name}`` placeholders; raise ``KeyError`` naming a missing variable."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return _ESCAPES[match.group(0)] if name is None else _text(variables[name])

    return _PLACEHOLDER.sub(substitute, template)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def template_version(system: str | None, template: str) -> str:
    """The default version of a prompt: a short hash of its system message and template."""
    digest = hashlib.sha256(f"{system or ''}\0{template}".encode()).hexdigest()
    return digest[:VERSION_HASH_CHARS]


def parse_prompt(text: str, source: str) -> Prompt:
    """A prompt from the text of a prompt file; ``source`` names it in errors."""
    data = validate(PromptFile, parse_yaml_mapping(text, source), source)
    return Prompt(
        id=data.id,
        version=data.version or template_version(data.system, data.template),
        model=data.model,
        provider=data.provider,
        params=data.params,
        system=data.system,
        template=data.template,
        source=source,
    )


def load_prompt(path: Path) -> Prompt:
    """Read and validate one prompt file."""
    return parse_prompt(read_text(path), str(path))


def is_prompt_file(path: Path) -> bool:
    """Whether ``path`` is named like a prompt file."""
    return path.suffix in PROMPT_SUFFIXES


def load_prompt_dir(directory: Path) -> list[Prompt]:
    """Every prompt file directly in ``directory``, sorted by file name."""
    if not directory.is_dir():
        raise InputError(directory, "prompt directory not found")
    files = sorted(path for path in directory.iterdir() if path.is_file() and is_prompt_file(path))
    return unique([load_prompt(path) for path in files])


def unique(prompts: Iterable[Prompt]) -> list[Prompt]:
    """``prompts`` as a list; raise :class:`InputError` when two share an id."""
    seen: dict[str, Prompt] = {}
    for prompt in prompts:
        other = seen.setdefault(prompt.id, prompt)
        if other is not prompt:
            raise InputError(prompt.source, f"id {prompt.id!r} is already used by {other.source}")
    return list(seen.values())


def select(prompts: Sequence[Prompt], ids: Sequence[str] | None, source: str) -> list[Prompt]:
    """The prompts named by ``ids`` (all when ``None``), in that order."""
    if ids is None:
        return list(prompts)
    by_id = {prompt.id: prompt for prompt in prompts}
    missing = [prompt_id for prompt_id in ids if prompt_id not in by_id]
    if missing:
        known = ", ".join(sorted(by_id)) or "none"
        raise InputError(source, f"prompts: no prompt file with id {missing} (found: {known})")
    return [by_id[prompt_id] for prompt_id in ids]
