"""The ``alerts`` settings section: environment and YAML configuration, validation, and an
import that stays light enough for the processor's settings module to use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from promptprof import ConfigError, load_settings
from promptprof_processor.alerts import AlertEngine, AlertSettings, ReceiverSettings, RouteSettings
from promptprof_processor.settings import ProcessorSettings


class WithAlerts(ProcessorSettings):
    """The processor's settings with the section, as the worker will declare it."""

    alerts: AlertSettings = AlertSettings()


def test_importing_the_settings_loads_neither_the_processor_nor_clients() -> None:
    code = (
        "import sys, promptprof_processor.alerts.settings\n"
        "heavy = ('promptprof_processor.settings', 'promptprof_processor.windows.figures', "
        "'aiokafka', 'httpx')\n"
        "print([m for m in sys.modules if m.startswith(heavy)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_configured_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text("defaults:\n  slo:\n    error_rate: {max: 0.2}\n")
    monkeypatch.setenv("PROMPTPROF_ALERTS__RULES_FILE", str(rules))
    monkeypatch.setenv("PROMPTPROF_ALERTS__REPEAT_INTERVAL_S", "600")
    monkeypatch.setenv(
        "PROMPTPROF_ALERTS__RECEIVERS",
        '[{"name": "oncall", "url": "https://hooks.example.com/x", "secret_env": "HOOK_KEY"},'
        ' {"name": "chat", "format": "slack", "url_env": "SLACK_URL"}]',
    )
    monkeypatch.setenv(
        "PROMPTPROF_ALERTS__ROUTES", '[{"receivers": ["chat"], "severities": ["critical"]}]'
    )
    settings = load_settings(cls=WithAlerts)
    alerts = settings.alerts
    assert alerts.repeat_interval_s == 600 and alerts.rules_file == rules
    assert [r.name for r in alerts.receivers] == ["oncall", "chat"]
    assert alerts.routes == [RouteSettings(receivers=["chat"], severities=["critical"])]
    engine = AlertEngine.from_settings(alerts)
    assert engine.rules.defaults.slo["error_rate"].max == 0.2
    assert engine.repeat_interval_ns == 600 * 10**9


def test_configured_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "promptprof.yaml"
    path.write_text(
        "alerts:\n"
        "  allowed_hosts: [hooks.example.com]\n"
        "  retry: {attempts: 3, timeout_s: 2}\n"
        "  receivers:\n"
        "    - {name: am, format: alertmanager, url: 'http://hooks.example.com:9093/api/v2/alerts'}\n"
    )
    alerts = load_settings(path, cls=WithAlerts).alerts
    assert alerts.retry.attempts == 3 and alerts.receivers[0].format == "alertmanager"


def test_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.retry\.attempts .*PROMPTPROF_ALERTS__RETRY"):
        load_settings(cls=WithAlerts, alerts={"retry": {"attempts": 0}})
    with pytest.raises(ConfigError, match="route names unknown receivers"):
        load_settings(cls=WithAlerts, alerts={"routes": [{"receivers": ["nobody"]}]})
    with pytest.raises(ConfigError, match="receiver names must be distinct"):
        load_settings(cls=WithAlerts, alerts={"receivers": [
            {"name": "a", "url": "http://h/"}, {"name": "a", "url": "http://h/"},
        ]})


def test_a_literal_secret_is_masked() -> None:
    settings = AlertSettings(receivers=[ReceiverSettings(name="r", url="http://h/x?token=TKN",
                                                         secret="hunter2")])
    assert "hunter2" not in repr(settings) and "TKN" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()
