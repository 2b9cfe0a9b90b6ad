"""The processor settings' windows section."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from promptprof import ConfigError, load_settings
from promptprof_processor.settings import ProcessorSettings, WindowSettings


def test_defaults() -> None:
    windows = WindowSettings()
    assert windows.widths_s == [10, 60]
    assert windows.allowed_lateness_s == 30
    assert windows.allowed_lateness_ns == 30_000_000_000
    assert windows.label_dimensions == []
    assert windows.max_series_per_prompt == 100


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPROF_WINDOWS__WIDTHS_S", "[60, 10, 10, 300]")
    monkeypatch.setenv("PROMPTPROF_WINDOWS__LABEL_DIMENSIONS", '["tenant", "region"]')
    monkeypatch.setenv("PROMPTPROF_WINDOWS__ALLOWED_LATENESS_S", "2.5")
    settings = load_settings(cls=ProcessorSettings)
    assert settings.windows.widths_s == [10, 60, 300]
    assert settings.windows.label_dimensions == ["tenant", "region"]
    assert settings.windows.allowed_lateness_ns == 2_500_000_000
    assert settings.kafka.bootstrap_servers  # the base settings are still there


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPROF_WINDOWS__MAX_SERIES_PER_PROMPT", "0")
    with pytest.raises(ConfigError, match="PROMPTPROF_WINDOWS__MAX_SERIES_PER_PROMPT"):
        load_settings(cls=ProcessorSettings)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("widths_s", [], "at least 1"),
        ("widths_s", [0, 10], "within 1..86400"),
        ("widths_s", [86_401], "within 1..86400"),
        ("allowed_lateness_s", -1, "greater than or equal"),
        ("label_dimensions", ["model"], "is a tag promptprof writes itself"),
        ("label_dimensions", ["a", "a"], "distinct"),
        ("label_dimensions", [""], "is empty"),
        ("label_dimensions", [str(i) for i in range(17)], "at most 16"),
    ],
)
def test_invalid_windows(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WindowSettings.model_validate({field: value})
