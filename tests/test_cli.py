"""The promptprof command line: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from promptprof._schema import render_schema
from promptprof_tools.cli import main


def test_schema_command_prints_the_schema(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["schema"]) == 0
    assert capsysbinary.readouterr().out == render_schema()


def test_invalid_setting_exits_2_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMPTPROF_PRODUCER__LINGER_MS", "0")
    assert main(["schema"]) == 2
    err = capsys.readouterr().err
    assert "producer.linger_ms" in err and "PROMPTPROF_PRODUCER__LINGER_MS" in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "schema"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_compare_with_missing_run_file_exits_2(tmp_path: Path) -> None:
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "promptprof_tools.cli", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
