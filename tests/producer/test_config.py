"""Settings: env over YAML over defaults; invalid values name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptprof import ConfigError, load_settings


def test_yaml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "promptprof.yaml"
    config.write_text("producer:\n  service_name: from-yaml\n  buffer_size: 5000\n")
    monkeypatch.setenv("PROMPTPROF_PRODUCER__BUFFER_SIZE", "7000")
    settings = load_settings(config)
    assert settings.producer.service_name == "from-yaml"
    assert settings.producer.buffer_size == 7000


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("kafka:\n  bootstrap_servers: broker:9093\n")
    monkeypatch.setenv("PROMPTPROF_CONFIG", str(config))
    assert load_settings().kafka.bootstrap_servers == "broker:9093"


def test_invalid_env_names_field_variable_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPROF_PRODUCER__SAMPLE_RATE", "1.5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "producer.sample_rate" in message
    assert "PROMPTPROF_PRODUCER__SAMPLE_RATE" in message
    assert "a fraction in (0, 1]" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("producer: [1, 2]\n", "producer"), ("- a\n", "mapping"), ("a: [\n", "cannot read")],
)
def test_bad_yaml_is_a_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


def test_secrets_do_not_show_in_repr() -> None:
    settings = load_settings(kafka={"sasl_mechanism": "PLAIN", "sasl_password": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert settings.kafka.client_options()["sasl_plain_password"] == "hunter2"
