"""The committed dashboard files: current, valid against the dashboard model subset, well laid
out, and referring only to variables and the data source that exist."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from promptprof_processor.dashboards import BUILDERS, rendered, write_dashboards
from promptprof_processor.dashboards.__main__ import main
from promptprof_processor.dashboards.model import DATASOURCE_UID, JSON

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
SCHEMA = json.loads((ROOT / "grafana" / "schema" / "dashboard.schema.json").read_text())
GRAFANA_VARIABLES = {"timeFilter", "__interval", "__interval_ms", "__range_s"}
VARIABLE = re.compile(r"\$\{?(\w+)")


def _committed() -> dict[str, JSON]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_committed_files_are_what_the_code_builds() -> None:
    on_disk = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert on_disk == rendered(), (
        "grafana/dashboards is stale: run `.venv/bin/python -m promptprof_processor.dashboards`"
    )


def test_generator_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BUILDERS)
    assert capsys.readouterr().out.count(str(tmp_path)) == len(BUILDERS)
    assert write_dashboards(tmp_path / "again")[0].read_text() == rendered()[sorted(BUILDERS)[0]]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_dashboard_is_valid_against_the_model_subset(name: str) -> None:
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(_committed()[name]), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_schema_rejects_what_grafana_would_not_load() -> None:
    dashboard = _committed()[sorted(BUILDERS)[0]]
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    broken = [
        {**panel, "gridPos": {**panel["gridPos"], "w": 25}},
        {**panel, "targets": [{**panel["targets"][0], "resultFormat": "timeseries"}]},
        {**panel, "type": "graph-typo"},
        {k: v for k, v in panel.items() if k != "gridPos"},
    ]
    validator = Draft202012Validator(SCHEMA)
    for item in broken:
        assert not validator.is_valid({**dashboard, "panels": [item]}), item


def test_uids_are_unique_and_every_panel_uses_the_provisioned_source() -> None:
    dashboards = _committed().values()
    assert len({d["uid"] for d in dashboards}) == len(BUILDERS)
    for dashboard in dashboards:
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
                assert {s["uid"] for s in sources} == {DATASOURCE_UID}, panel["title"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_panels_do_not_overlap_and_ids_are_unique(name: str) -> None:
    panels = _committed()[name]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    boxes = [(p["title"], p["gridPos"]) for p in panels]
    for (a, ga), (b, gb) in combinations(boxes, 2):
        apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                 or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])
        assert apart, f"{a!r} overlaps {b!r}"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_queries_use_only_defined_variables_in_order(name: str) -> None:
    dashboard = _committed()[name]
    defined = set(GRAFANA_VARIABLES)
    for variable in dashboard["templating"]["list"]:  # a variable may use those before it
        used = set(VARIABLE.findall(variable.get("query", ""))) - {"timeFilter"}
        assert used <= defined, (variable["name"], used - defined)
        defined.add(variable["name"])
    texts = [t["query"] for p in dashboard["panels"] for t in p.get("targets", [])]
    texts += [a["target"]["query"] for a in dashboard["annotations"]["list"] if "target" in a]
    texts += [p["interval"] for p in dashboard["panels"] if "interval" in p]
    for text in texts:
        assert set(VARIABLE.findall(text)) <= defined, text


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_time_series_queries_filter_time_and_width(name: str) -> None:
    for panel in _committed()[name]["panels"]:
        for target in panel.get("targets", []):
            assert "$timeFilter" in target["query"], panel["title"]
            if '"llm_window' in target["query"]:  # the width chosen from the range
                assert "\"width\" = '" in target["query"], panel["title"]
                assert "$__range_s" in target["query"], panel["title"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_no_panel_averages_a_percentile(name: str) -> None:
    for panel in _committed()[name]["panels"]:
        for target in panel.get("targets", []):
            assert not re.search(r'(mean|median|sum)\("\w*_p\d+', target["query"]), target["query"]


def test_overview_has_the_panels_the_issue_asks_for() -> None:
    overview = _committed()["promptprof-overview.json"]
    titles = " | ".join(p["title"] for p in overview["panels"])
    for wanted in ("Calls per second", "Error rate", "Latency p50 / p95 / p99",
                   "Time to first token", "Input tokens", "Output tokens", "Cost per hour",
                   "Cost per day", "Projected month cost", "Projected month vs budget",
                   "Top prompts by cost", "Top prompts by p95", "Quality against cost"):
        assert wanted in titles
    assert any(p["type"] == "xychart" for p in overview["panels"])
    names = [v["name"] for v in overview["templating"]["list"]]
    assert names == ["service", "budget_usd"]
    assert [a["name"] for a in overview["annotations"]["list"]][1:] == ["alerts"]


def test_drilldown_variables_chain_service_prompt_version_model() -> None:
    variables = _committed()["promptprof-prompt.json"]["templating"]["list"]
    by_name = {v["name"]: v for v in variables}
    assert list(by_name) == ["service", "prompt", "version", "model"]
    assert "$service" in by_name["prompt"]["query"]
    for name in ("version", "model"):
        assert "$prompt" in by_name[name]["query"] and by_name[name]["multi"]
