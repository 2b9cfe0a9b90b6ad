"""The run file: what ``promptprof bench SUITE --out run.json`` writes and ``compare`` reads.

A run file is one JSON object::

    {
      "schema_version": 1,
      "run": {"suite": "...", "started_at": "2026-11-24T10:00:00Z", "git_ref": "abc123",
              "provider": "openai", "seed": 7, "monthly_volume": 1000000},
      "prompts": {"summarize": [{"item_id": "doc-1", "repetition": 0, ...}, ...]}
    }

``prompts`` maps each prompt id to its call records, one per (dataset item, repetition).
Unknown keys are ignored, so newer writers stay readable; ``schema_version`` changes when a
field changes meaning.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RUN_FILE_SCHEMA_VERSION: Final = 1
MAX_REPORTED_ERRORS = 5

NonNegInt = Annotated[int, Field(ge=0)]


class RunFileError(Exception):
    """A run file that cannot be read or written; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class RunMetadata(BaseModel):
    """Who ran the suite, when, where and against what."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    suite: str = Field(min_length=1, description="Name of the bench suite.")
    started_at: datetime = Field(description="When the run started (ISO 8601).")
    git_ref: str | None = Field(default=None, description="Commit or branch the run was made at.")
    provider: str = Field(min_length=1, description="LLM provider, e.g. 'openai' or 'simulated'.")
    seed: int = Field(description="Seed of the run (sampling, simulated provider).")
    monthly_volume: NonNegInt | None = Field(
        default=None, description="Expected calls per month and prompt, for monthly cost."
    )


class CallRecord(BaseModel):
    """One measured call of one prompt on one dataset item."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: str = Field(min_length=1, description="Dataset item the prompt was rendered with.")
    repetition: NonNegInt = Field(description="Index of the repetition on this item.")
    prompt_id: str = Field(min_length=1)
    prompt_version: str = Field(min_length=1)
    model: str = Field(min_length=1)
    latency_ms: float = Field(ge=0, description="Wall time of the call.")
    ttft_ms: float | None = Field(default=None, ge=0, description="Time to first token.")
    input_tokens: NonNegInt
    output_tokens: NonNegInt
    cost_usd: float | None = Field(
        default=None, ge=0, description="Null when the price is unknown."
    )
    status: Literal["ok", "error"] = "ok"
    error_type: str | None = None
    quality_score: float | None = Field(default=None, ge=0, le=1)
    quality_metric: str | None = Field(default=None, description="Name of the quality scorer.")

    @field_validator("latency_ms", "ttft_ms", "cost_usd", "quality_score")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _metric_named(self) -> Self:
        if self.quality_score is not None and not self.quality_metric:
            raise ValueError("quality_metric is required when quality_score is given")
        return self


class RunFile(BaseModel):
    """A whole bench run: metadata and, per prompt id, its call records."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = RUN_FILE_SCHEMA_VERSION
    run: RunMetadata
    prompts: dict[str, list[CallRecord]]

    @model_validator(mode="after")
    def _records_under_their_prompt(self) -> Self:
        for prompt_id, records in self.prompts.items():
            for index, record in enumerate(records):
                if record.prompt_id != prompt_id:
                    raise ValueError(
                        f"prompts.{prompt_id}[{index}] has prompt_id {record.prompt_id!r}"
                    )
        return self


def load_run(path: Path) -> RunFile:
    """Read and validate a run file; raise :class:`RunFileError` on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFileError(path, f"cannot read the file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise RunFileError(path, problem) from None
    try:
        return RunFile.model_validate(data)
    except ValidationError as exc:
        raise RunFileError(path, f"not a valid run file: {describe_errors(exc)}") from None


def save_run(run: RunFile, path: Path) -> None:
    """Write a run file atomically (a temporary file renamed over ``path``)."""
    try:
        _write_atomically(path, run.model_dump_json(indent=2))
    except OSError as exc:
        raise RunFileError(path, f"cannot write the file ({exc})") from None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def describe_errors(exc: ValidationError) -> str:
    """One line naming each invalid field (the first few) and what is wrong with it."""
    parts = []
    for error in exc.errors()[:MAX_REPORTED_ERRORS]:
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        parts.append(f"{location}: {error['msg']}")
    hidden = exc.error_count() - MAX_REPORTED_ERRORS
    if hidden > 0:
        parts.append(f"and {hidden} more")
    return "; ".join(parts)
