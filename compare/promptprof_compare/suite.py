"""Bench suites: which prompts to run on which dataset, against which provider, scored how.

A suite file is YAML; paths are relative to it::

    name: support                     # default: the file name without its suffix
    prompt_dir: ../prompts            # prompt files (*.yaml, *.yml) directly in this directory
    prompts: [support_reply]          # prompt ids to run; default: every prompt in prompt_dir
    dataset: ../datasets/support.jsonl
    provider: {type: simulated}       # or openai / anthropic, see promptprof_compare.providers
    repetitions: 3                    # calls per prompt and dataset item
    concurrency: 8                    # calls in flight at once
    timeout_s: 60                     # per call
    seed: 0                           # default seed (``--seed`` wins)
    monthly_volume: 1000000           # calls per month and prompt, for the monthly cost
    thresholds: ../thresholds.yaml    # promptprof compare thresholds, used by ``promptprof ci``
    evaluators:                       # see promptprof_compare.evaluators
      - {type: rouge_l, primary: true}
      - {type: contains, reference_field: keywords}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptprof_compare.evaluators import EvaluatorConfig
from promptprof_compare.inputs import parse_yaml_mapping, read_text, resolve, validate
from promptprof_compare.providers import ProviderConfig


class SuiteFile(BaseModel):
    """What a suite file holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=128)
    description: str | None = None
    prompt_dir: str = Field(min_length=1)
    prompts: list[str] | None = Field(default=None, min_length=1)
    dataset: str = Field(min_length=1)
    provider: ProviderConfig
    repetitions: int = Field(default=3, ge=1, le=10_000)
    concurrency: int = Field(default=4, ge=1, le=1_000)
    timeout_s: float = Field(default=60.0, gt=0)
    seed: int = 0
    monthly_volume: int | None = Field(default=None, ge=0)
    thresholds: str | None = None
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _evaluator_names(self) -> Self:
        labels = [evaluator.label for evaluator in self.evaluators]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"evaluators: names must be unique, repeated: {repeated} "
                             "(give each a distinct name)")
        if sum(evaluator.primary for evaluator in self.evaluators) > 1:
            raise ValueError("evaluators: at most one can be primary")
        return self

    @property
    def primary_evaluator(self) -> str | None:
        """The evaluator whose score is the quality score: the primary one, else the first."""
        marked = [evaluator for evaluator in self.evaluators if evaluator.primary]
        chosen = marked or self.evaluators
        return chosen[0].label if chosen else None


@dataclass(frozen=True)
class Suite:
    """A validated suite file with its paths resolved."""

    path: Path
    config: SuiteFile

    @property
    def name(self) -> str:
        """The suite's name."""
        return self.config.name or self.path.stem

    @property
    def base_dir(self) -> Path:
        """The directory the suite's paths are relative to."""
        return self.path.parent

    @property
    def prompt_dir(self) -> Path:
        """Where the suite's prompt files are."""
        return resolve(self.base_dir, self.config.prompt_dir)

    @property
    def dataset(self) -> Path:
        """The dataset file."""
        return resolve(self.base_dir, self.config.dataset)

    @property
    def thresholds(self) -> Path | None:
        """The thresholds file for comparisons, if any."""
        return resolve(self.base_dir, self.config.thresholds) if self.config.thresholds else None


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file; raise :class:`InputError` naming the file and field."""
    config = validate(SuiteFile, parse_yaml_mapping(read_text(path), path), path)
    return Suite(path, config)
