"""Builders of bench inputs (prompt files, datasets, suites) in a temporary directory."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from promptprof import ProducerSettings, Settings

WORDS = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi",
    "psi", "omega",
]
PROMPT = {"id": "answer", "model": "gpt-4o-mini", "provider": "openai",
          "template": "Tell me about {topic}."}
FAST_QUALITY = [{"type": "rouge_l", "stemmer": False}]


def reference(index: int) -> str:
    """A reproducible 20-word reference answer for item ``index``."""
    rng = random.Random(index)
    return " ".join(rng.choice(WORDS) for _ in range(20))


def write_yaml(path: Path, data: Any) -> Path:
    """Write ``data`` as YAML and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_dataset(path: Path, items: int) -> Path:
    """A JSONL dataset of ``items`` items with a topic input and a reference each."""
    lines = [
        json.dumps({"id": f"item-{i}", "input": {"topic": f"topic {i}"}, "reference": reference(i)})
        for i in range(items)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_suite(
    root: Path,
    *,
    name: str = "suite.yaml",
    prompt_files: Sequence[dict[str, Any]] = (PROMPT,),
    items: int = 20,
    provider: dict[str, Any] | None = None,
    evaluators: Sequence[dict[str, Any]] = FAST_QUALITY,
    **fields: Any,
) -> Path:
    """Write prompt files, a dataset and a suite under ``root``; return the suite's path."""
    for prompt in prompt_files:
        write_yaml(root / "prompts" / f"{prompt['id']}.yaml", prompt)
    write_dataset(root / "data.jsonl", items)
    suite = {
        "prompt_dir": "prompts",
        "dataset": "data.jsonl",
        "provider": provider or {"type": "simulated"},
        "repetitions": 3,
        "concurrency": 16,
        "evaluators": list(evaluators),
        **fields,
    }
    return write_yaml(root / name, suite)


def offline_settings(**producer: Any) -> Settings:
    """Settings whose producer does not publish (unless overridden)."""
    options: dict[str, Any] = {"enabled": False, "compression": "none", **producer}
    return Settings(producer=ProducerSettings(**options))


