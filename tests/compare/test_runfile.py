"""Run files: round trip, and every kind of bad input gives a RunFileError naming file and cause."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptprof_compare.runfile import RunFile, RunFileError, load_run, save_run
from promptprof_compare.synthetic import SyntheticProfile, synthetic_run


def _record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "item_id": "a",
        "repetition": 0,
        "prompt_id": "p",
        "prompt_version": "v1",
        "model": "m",
        "latency_ms": 100.0,
        "input_tokens": 10,
        "output_tokens": 5,
    }
    record.update(changes)
    return record


def _document(*records: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "run": {"suite": "s", "started_at": "2026-01-01T00:00:00Z", "provider": "x", "seed": 1},
        "prompts": {"p": list(records) or [_record()]},
    }


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "run.json"
    path.write_text(content, encoding="utf-8")
    return path


def test_save_then_load_gives_the_same_run(tmp_path: Path) -> None:
    run = synthetic_run(SyntheticProfile(), items=5, repetitions=2, seed=1)
    path = tmp_path / "run.json"
    save_run(run, path)
    assert load_run(path) == run
    assert not [name for name in tmp_path.iterdir() if name.name.startswith(".")]


def test_minimal_document_loads_with_defaults(tmp_path: Path) -> None:
    run = load_run(_write(tmp_path, json.dumps(_document())))
    record = run.prompts["p"][0]
    assert (record.status, record.ttft_ms, record.cost_usd, record.quality_score) == (
        "ok",
        None,
        None,
        None,
    )
    assert run.run.git_ref is None and run.run.monthly_volume is None


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    document = _document(_record(labels={"team": "x"}))
    document["writer"] = "promptprof 9"
    assert isinstance(load_run(_write(tmp_path, json.dumps(document))), RunFile)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(RunFileError, match=r"absent\.json: file not found"):
        load_run(path)


def test_malformed_json_gives_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match=r"run.json: malformed JSON at line 2 column"):
        load_run(_write(tmp_path, '{"run":\n  oops}'))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (_document(_record(latency_ms=-1)), r"prompts\.p\.0\.latency_ms: .*greater than or equal"),
        (_document(_record(quality_score=1.5)), r"quality_score: .*less than or equal to 1"),
        (_document(_record(quality_score=0.5)), "quality_metric is required"),
        (_document(_record(status="crashed")), r"status: Input should be 'ok' or 'error'"),
        (_document(_record(prompt_id="q")), r"prompts\.p\[0\] has prompt_id 'q'"),
        ({"prompts": {}}, r"run: Field required"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)
def test_invalid_content_names_the_field(tmp_path: Path, document: object, expected: str) -> None:
    with pytest.raises(RunFileError, match=expected) as caught:
        load_run(_write(tmp_path, json.dumps(document)))
    assert caught.value.path.name == "run.json"
    assert "not a valid run file" in caught.value.problem


def test_non_finite_number_is_rejected(tmp_path: Path) -> None:
    text = json.dumps(_document(_record(latency_ms=float("nan"))))
    with pytest.raises(RunFileError, match="latency_ms"):
        load_run(_write(tmp_path, text))


def test_unwritable_destination_raises_run_file_error(tmp_path: Path) -> None:
    run = synthetic_run(SyntheticProfile(), items=2, repetitions=1, seed=1)
    with pytest.raises(RunFileError, match="cannot write"):
        save_run(run, tmp_path / "missing-dir" / "run.json")
