"""Prompt files, datasets and suites: loading, rendering, and clear errors with exit code 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from promptprof_compare.cli import EXIT_USAGE
from promptprof_compare.inputs import InputError
from promptprof_compare.prompts import load_prompt, parse_prompt, render_template
from promptprof_compare.runner import bench_command, prepare
from promptprof_compare.suite import load_suite

from .conftest import PROMPT, make_suite, offline_settings, write_yaml


def bench_error(suite: Path, capsys: pytest.CaptureFixture[str], **kwargs: Path) -> str:
    """Run bench_command, expect exit code 2, return stderr."""
    out = suite.parent / "run.json"
    assert bench_command(suite, out, None, offline_settings(), **kwargs) == EXIT_USAGE
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("promptprof bench: error: ")
    return err


def test_version_defaults_to_a_hash_of_system_and_template() -> None:
    text = "id: a\nmodel: m\ntemplate: Hello {name}\n"
    first = parse_prompt(text, "a.yaml")
    assert len(first.version) == 12
    assert parse_prompt(text, "b.yaml").version == first.version
    assert parse_prompt(text.replace("Hello", "Hi"), "a.yaml").version != first.version
    assert parse_prompt(text + "system: Be brief.\n", "a.yaml").version != first.version
    assert parse_prompt(text + "version: v7\n", "a.yaml").version == "v7"


def test_render_replaces_names_and_keeps_other_braces() -> None:
    template = 'Say {greeting} to {name} as JSON {"to": "{name}"} {{literal}} {not a name}'
    assert render_template(template, {"greeting": "hi", "name": "Ana"}) == (
        'Say hi to Ana as JSON {"to": "Ana"} {literal} {not a name}'
    )
    assert render_template("{items}", {"items": [1, "é"]}) == '[1, "é"]'
    with pytest.raises(KeyError):
        render_template("{missing}", {})


def test_prompt_file_placeholders_include_the_system_message(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "p.yaml", {**PROMPT, "system": "You know {field}."})
    assert load_prompt(path).placeholders == {"topic", "field"}


def test_missing_suite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = bench_error(tmp_path / "nope.yaml", capsys)
    assert "nope.yaml: file not found" in err


def test_malformed_suite_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("prompt_dir: [unclosed\n")
    assert "suite.yaml: malformed YAML" in bench_error(suite, capsys)


def test_suite_field_errors_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = make_suite(tmp_path, repetitions=0, concurrency="many", extra_field=1)
    err = bench_error(suite, capsys)
    assert "suite.yaml: " in err
    for field in ("repetitions", "concurrency", "extra_field"):
        assert field in err


def test_unknown_evaluator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, evaluators=[{"type": "rouge_l"}, {"type": "vibes"}])
    err = bench_error(suite, capsys)
    assert "evaluators.1" in err and "'vibes'" in err and "rouge_l" in err


def test_unknown_provider_and_bad_knob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, provider={"type": "simulated", "inject": {"error_rate": 2}})
    assert "provider.simulated.inject.error_rate" in bench_error(suite, capsys)
    suite = make_suite(tmp_path, provider={"type": "gemini"})
    assert "provider" in bench_error(suite, capsys)


def test_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path)
    (tmp_path / "data.jsonl").write_text("\n\n")
    assert "data.jsonl: the dataset is empty" in bench_error(suite, capsys)


def test_bad_dataset_lines_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path)
    data = tmp_path / "data.jsonl"
    good = json.dumps({"id": "a", "input": {"topic": "x"}, "reference": "y"})
    data.write_text(f"{good}\n{{not json\n")
    assert "data.jsonl:2: not valid JSON" in bench_error(suite, capsys)
    data.write_text(f"{good}\n{json.dumps({'id': 'b'})}\n")
    assert "data.jsonl:2: input: Field required" in bench_error(suite, capsys)
    data.write_text(f"{good}\n{good}\n")
    assert "data.jsonl:2: id 'a' already used on line 1" in bench_error(suite, capsys)


def test_missing_template_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = {**PROMPT, "template": "About {topic} for {reader}"}
    suite = make_suite(tmp_path, prompt_files=[prompt])
    err = bench_error(suite, capsys)
    assert "data.jsonl:1: input has no reader, used by prompt 'answer'" in err


def test_missing_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, evaluators=[{"type": "contains", "reference_field": "keywords"}])
    err = bench_error(suite, capsys)
    assert "data.jsonl:1: evaluator 'contains': field 'keywords' must be a string" in err


def test_missing_and_duplicate_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, prompt_files=[PROMPT, {**PROMPT, "id": "other"}])
    write_yaml(tmp_path / "prompts" / "copy.yml", PROMPT)
    err = bench_error(suite, capsys)
    assert "id 'answer' is already used by" in err and "copy.yml" in err
    (tmp_path / "prompts" / "copy.yml").unlink()
    suite = make_suite(tmp_path, prompts=["answer", "ghost"])
    assert "no prompt file with id ['ghost']" in bench_error(suite, capsys)


def test_malformed_prompt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path)
    write_yaml(tmp_path / "prompts" / "answer.yaml", {"id": "answer", "model": "m"})
    assert "answer.yaml: template: Field required" in bench_error(suite, capsys)


def test_missing_prompt_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path)
    err = bench_error(suite, capsys, prompt_dir=tmp_path / "elsewhere")
    assert "elsewhere: prompt directory not found" in err


def test_missing_api_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_TEST_KEY", raising=False)
    suite = make_suite(tmp_path, provider={"type": "openai", "api_key_env": "BENCH_TEST_KEY"})
    err = bench_error(suite, capsys)
    assert "provider.api_key_env: environment variable BENCH_TEST_KEY is not set" in err


def test_bad_evaluator_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, evaluators=[{"type": "regex", "pattern": "(unclosed"}])
    assert "evaluators.0.regex.pattern" in bench_error(suite, capsys)
    suite = make_suite(tmp_path, evaluators=[{"type": "json_schema", "schema": {"type": 5}}])
    assert "not a valid JSON Schema" in bench_error(suite, capsys)
    suite = make_suite(tmp_path, evaluators=[{"type": "custom", "function": "no_such_mod:f"}])
    assert "evaluators.0 (custom): cannot import module 'no_such_mod'" in bench_error(suite, capsys)
    suite = make_suite(tmp_path, evaluators=[{"type": "chrf"}, {"type": "chrf"}])
    assert "names must be unique" in bench_error(suite, capsys)


def test_embedding_without_its_package_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("sentence_transformers") is not None:
        pytest.skip("sentence-transformers is installed: the missing-extra error cannot happen")
    suite = make_suite(tmp_path, evaluators=[{"type": "embedding"}])
    err = bench_error(suite, capsys)
    assert "evaluators.0 (embedding): needs the optional package sentence-transformers" in err


def test_prompt_dir_override(tmp_path: Path) -> None:
    suite = load_suite(make_suite(tmp_path))
    other = tmp_path / "other"
    write_yaml(other / "x.yaml", {**PROMPT, "id": "from_other_dir"})
    assert [p.id for p in prepare(suite, prompt_dir=other).prompts] == ["from_other_dir"]


def test_input_error_message_names_source_and_problem() -> None:
    error = InputError("suite.yaml", "repetitions: too small")
    assert str(error) == "suite.yaml: repetitions: too small"
