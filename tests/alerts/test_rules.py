"""Alert rules: YAML loading, per-prompt merging over defaults, and clear errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from promptprof_processor.alerts import rules as rules_module
from promptprof_processor.alerts.detector import CompiledRules
from promptprof_processor.alerts.metrics import METRIC_NAMES, METRICS
from promptprof_processor.alerts.rules import (
    DEFAULT_ANOMALY_METRICS,
    AlertRules,
    RulesError,
    load_rules,
    parse_rules,
)


def test_every_metric_name_has_a_reader() -> None:
    assert set(METRICS) == set(METRIC_NAMES)


def test_built_in_defaults() -> None:
    rules = AlertRules()
    anomaly = rules.defaults.anomaly
    assert set(anomaly.metrics) == set(DEFAULT_ANOMALY_METRICS)
    assert anomaly.method == "mad"
    assert rules.defaults.hysteresis.fire_after == 2
    assert rules.defaults.slo == {}
    assert load_rules(None) == rules


def test_the_documented_example_is_valid() -> None:
    doc = rules_module.__doc__ or ""
    example = doc.split(".. code-block:: yaml", 1)[1].split("\nDefault anomaly metrics", 1)[0]
    rules = parse_rules(yaml.safe_load(textwrap.dedent(example)))
    prompt = rules.for_prompt("support-answer")
    assert prompt.slo["latency_p95_ms"].max == 1500
    assert prompt.slo["error_rate"].max == 0.05  # inherited from the defaults
    assert prompt.anomaly.threshold == 6
    assert prompt.anomaly.metrics["latency_p99_ms"].threshold == 6
    assert not prompt.anomaly.metrics["cost_per_call_usd"].enabled
    assert rules.for_prompt("other") is rules.defaults


def test_prompt_overrides_merge_key_by_key() -> None:
    rules = parse_rules({
        "defaults": {
            "min_calls": 50,
            "slo": {"latency_p95_ms": {"max": 2000}, "error_rate": {"max": 0.05}},
            "anomaly": {"threshold": 5, "metrics": {"tokens_per_call": {"threshold": 7}}},
        },
        "prompts": {
            "sql-gen": {
                "slo": {"error_rate": None, "quality_mean": {"min": 0.7}},
                "anomaly": {
                    "metrics": {"error_rate": None, "tokens_per_call": {"direction": "up"}}
                },
            },
        },
    })
    sql = rules.for_prompt("sql-gen")
    assert sql.min_calls == 50
    assert set(sql.slo) == {"latency_p95_ms", "quality_mean"}
    assert sql.anomaly.threshold == 5
    tokens = sql.anomaly.metrics["tokens_per_call"]
    assert (tokens.threshold, tokens.direction) == (7, "up")
    assert not sql.anomaly.metrics["error_rate"].enabled
    checks = {c.rule for c in CompiledRules.of(sql).checks}
    assert "anomaly.error_rate" not in checks
    assert {"slo.latency_p95_ms", "slo.quality_mean", "anomaly.latency_p95_ms"} <= checks


def test_per_metric_min_calls_and_severity() -> None:
    rules = parse_rules({
        "defaults": {
            "min_calls": 10,
            "slo": {"latency_p95_ms": {"max": 900, "min_calls": 40, "severity": "warning"}},
        }
    })
    checks = {c.rule: c for c in CompiledRules.of(rules.defaults).checks}
    assert checks["slo.latency_p95_ms"].min_calls == 40
    assert checks["slo.latency_p95_ms"].severity == "warning"
    assert checks["anomaly.error_rate"].min_calls == 10
    assert checks["anomaly.latency_p95_ms"].min_calls == 40
    assert checks["anomaly.latency_p99_ms"].min_calls == 100


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"defaults": {"slo": {"latency_p95": {"max": 1}}}}, "defaults.slo.latency_p95"),
        ({"defaults": {"slo": {"error_rate": {"max": 1, "min": 0}}}}, "exactly one of max or min"),
        ({"defaults": {"min_calls": "many"}}, "defaults.min_calls"),
        ({"defaults": {"anomaly": {"treshold": 3}}}, "defaults.anomaly.treshold"),
        ({"defaults": {"anomaly": {"method": "prophet"}}}, "defaults.anomaly.method"),
        (
            {"defaults": {"anomaly": {"warmup_windows": 50, "baseline_windows": 20}}},
            "warmup_windows must not exceed baseline_windows",
        ),
        (
            {"prompts": {"p1": {"hysteresis": {"fire_after": 0}}}},
            "prompts.p1.hysteresis.fire_after",
        ),
        ({"prompts": {"p1": ["not", "a", "mapping"]}}, "prompts.p1: expected a mapping"),
        ({"rules": {}}, "rules: unknown section"),
    ],
)
def test_errors_name_the_bad_key(document: dict[str, object], expected: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(document, "alerts.yaml")
    message = str(caught.value)
    assert message.startswith("invalid alert rules in alerts.yaml:")
    assert expected in message


def test_error_shows_the_expected_range() -> None:
    with pytest.raises(RulesError, match=r"fire_after.*expected bad windows in a row, 1\.\.100"):
        parse_rules({"defaults": {"hysteresis": {"fire_after": 0}}})


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("defaults:\n  slo:\n    error_rate: {max: 0.1}\n")
    assert load_rules(path).defaults.slo["error_rate"].max == 0.1


def test_unreadable_or_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read alert rules file"):
        load_rules(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(RulesError, match="must hold a mapping"):
        load_rules(path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("defaults: {slo: [\n")
    with pytest.raises(RulesError, match="cannot read alert rules file"):
        load_rules(broken)
