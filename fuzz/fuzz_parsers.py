"""Atheris harness: the YAML/JSON file parsers (prompt, suite, dataset, thresholds, rules,
config). Each must raise only its own error type, with a message.

Run by hand (not part of the test suite)::

    .venv/bin/python fuzz/fuzz_parsers.py -max_total_time=600 fuzz/corpus/parsers
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped]
import yaml
from _harness import fuzz

from promptprof import ConfigError, load_settings
from promptprof_compare.dataset import load_dataset
from promptprof_compare.inputs import InputError
from promptprof_compare.prompts import parse_prompt
from promptprof_compare.stats import ThresholdsError
from promptprof_compare.stats import load_settings as load_thresholds
from promptprof_compare.suite import load_suite
from promptprof_processor.alerts.rules import RulesError, load_rules, parse_rules

WORK = Path(tempfile.mkdtemp(prefix="promptprof-fuzz-"))
LOADERS: list[tuple[str, Callable[[Path], Any], type[Exception]]] = [
    ("suite.yaml", load_suite, InputError),
    ("data.jsonl", load_dataset, InputError),
    ("thresholds.yaml", load_thresholds, ThresholdsError),
    ("rules.yaml", load_rules, RulesError),
    ("promptprof.yaml", load_settings, ConfigError),
]


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    which = provider.ConsumeIntInRange(0, len(LOADERS) + 1)
    text = provider.ConsumeUnicodeNoSurrogates(len(data))
    if which == len(LOADERS):
        try:
            parse_prompt(text, "fuzz")
        except InputError as exc:
            assert str(exc)
        return
    if which == len(LOADERS) + 1:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            return
        try:
            parse_rules(document, "fuzz")
        except RulesError as exc:
            assert str(exc)
        return
    name, load, error = LOADERS[which]
    path = WORK / name
    path.write_text(text, encoding="utf-8")
    try:
        load(path)
    except error as exc:
        assert str(exc)


def main() -> None:
    fuzz(test_one_input)


if __name__ == "__main__":
    main()
