"""Every query of every dashboard, run against InfluxDB after the real pipeline filled it.

Template variables are resolved the way Grafana does: each query variable's ``SHOW TAG VALUES``
query runs (with the variables before it filled in) and must return values; a single-value
variable takes one of them, a multi-value one all of them (Grafana's ``(a|b)`` regex form).
Grafana's own variables get fixed values: ``$timeFilter`` -> ``time > now() - 1h``,
``$__interval`` -> ``10s``. Then every panel target and annotation query must return rows, and
every double-quoted name in it must be a measurement, field or tag that the sink wrote
(InfluxQL answers an unknown field with an empty result, not an error).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from dashboards.filled import SLOW_PROMPT, FilledDatabase
from promptprof_processor.dashboards import BUILDERS
from promptprof_processor.dashboards.model import JSON

pytestmark = pytest.mark.integration

GRAFANA_VARIABLES = {
    "timeFilter": "time > now() - 1h",
    "__interval": "10s",
    "__interval_ms": "10000",
    "__range_s": "3600",
}
# the drill-down shows this prompt: it has two versions to overlay
DRILLDOWN_PROMPT = "support-answer"
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
QUOTED = re.compile(r'"([^"]+)"')
MEASUREMENT = re.compile(r'FROM "([^"]+)"')
REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")


def _escape(value: str) -> str:
    """Grafana's regex escaping of multi-value variables."""
    return REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)


def substitute(query: str, values: dict[str, str]) -> str:
    """``query`` with every ``$name``/``${name}`` replaced; fails on an unknown variable."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"query uses undefined variable ${name}: {query}"
        return values[name]

    return VARIABLE.sub(one, query)


def _choose(variable: JSON, found: list[str]) -> str:
    if variable["multi"]:
        return "(" + "|".join(_escape(v) for v in found) + ")"
    if variable["name"] == "prompt" and DRILLDOWN_PROMPT in found:
        return DRILLDOWN_PROMPT
    return str(variable.get("current", {}).get("value") or found[0])


def resolve_variables(dashboard: JSON, filled: FilledDatabase) -> dict[str, str]:
    """Variable name -> substituted text, resolving query variables in order."""
    values = dict(GRAFANA_VARIABLES)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            values[variable["name"]] = variable["query"]
            continue
        query = substitute(variable["query"], values)
        found = [str(r["value"]) for r in filled.rows(query)]
        assert found, f"variable {variable['name']} has no values: {query}"
        if variable.get("current", {}).get("value") not in (None, *found):
            variable = {**variable, "current": {}}  # a default this run did not write
        values[variable["name"]] = _choose(variable, found)
    return values


def queries(dashboard: JSON) -> Iterator[tuple[str, str, JSON]]:
    """(where, query, owner) for every panel target and annotation query."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["query"], panel
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["target"]["query"], annotation


class Schema:
    """Field and tag keys per measurement, as InfluxDB reports them."""

    def __init__(self, filled: FilledDatabase) -> None:
        self.filled = filled
        self._keys: dict[str, set[str]] = {}

    def names(self, measurement: str) -> set[str]:
        """Fields and tags of ``measurement`` (empty when it does not exist)."""
        if measurement not in self._keys:
            fields = self.filled.rows(f'SHOW FIELD KEYS FROM "{measurement}"')
            tags = self.filled.rows(f'SHOW TAG KEYS FROM "{measurement}"')
            self._keys[measurement] = {str(r["fieldKey"]) for r in fields} | {
                str(r["tagKey"]) for r in tags
            }
        return self._keys[measurement]


def check_names(query: str, schema: Schema) -> None:
    """Every double-quoted name in ``query`` is its measurement or one of its fields/tags."""
    measurements = MEASUREMENT.findall(query)
    assert measurements, f"no FROM in {query}"
    known = set(measurements).union(*(schema.names(m) for m in measurements))
    unknown = set(QUOTED.findall(query)) - known
    assert not unknown, f"names the sink does not write: {sorted(unknown)} in {query}"


def result_columns(rows: list[dict[str, Any]]) -> set[str]:
    """Columns and tags of a result, plus Grafana's ``Time``."""
    return {"Time", *(key for row in rows for key in row)}


def check_panel_columns(owner: JSON, rows: list[dict[str, Any]]) -> None:
    """Columns that a panel's options or transformations name exist in the result."""
    columns = result_columns(rows)
    named = [s["field"] for t in owner.get("transformations", []) if t["id"] == "sortBy"
             for s in t["options"]["sort"]]
    named += [owner["options"]["dims"]["x"]] if owner.get("type") == "xychart" else []
    named += [c for c in owner.get("tagsColumn", "").split(",") if c]
    named += [owner["textColumn"]] if owner.get("textColumn") else []
    missing = set(named) - columns
    assert not missing, f"{owner.get('title') or owner.get('name')}: no columns {missing}"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_query_returns_rows_with_known_names(name: str, filled: FilledDatabase) -> None:
    dashboard = BUILDERS[name]()
    values = resolve_variables(dashboard, filled)
    schema = Schema(filled)
    checked = 0
    for where, query, owner in queries(dashboard):
        text = substitute(query, values)
        rows = filled.rows(text)
        assert rows, f"{name}: {where} returned no rows: {text}"
        check_names(text, schema)
        check_panel_columns(owner, rows)
        checked += 1
    assert checked >= 10


def test_variable_queries_name_known_tags(filled: FilledDatabase) -> None:
    schema = Schema(filled)
    for build in BUILDERS.values():
        for variable in build()["templating"]["list"]:
            if variable["type"] == "query":
                check_names(variable["query"], schema)


def test_drilldown_overlays_the_versions_of_one_prompt(filled: FilledDatabase) -> None:
    dashboard = BUILDERS["promptprof-prompt.json"]()
    values = resolve_variables(dashboard, filled)
    assert values["prompt"] == DRILLDOWN_PROMPT
    latency = next(p for p in dashboard["panels"] if p["title"].startswith("Latency"))
    rows = filled.rows(substitute(latency["targets"][0]["query"], values))
    assert {r["prompt_version"] for r in rows} == {"v3", "v4"}


def test_overview_shows_every_prompt(filled: FilledDatabase) -> None:
    dashboard = BUILDERS["promptprof-overview.json"]()
    values = resolve_variables(dashboard, filled)
    calls = next(p for p in dashboard["panels"] if p["title"] == "Calls per second"
                 and p["type"] == "timeseries")
    rows = filled.rows(substitute(calls["targets"][0]["query"], values))
    assert {r["prompt_id"] for r in rows} == {prompt for prompt, _, _ in filled.series}
    assert SLOW_PROMPT in {r["prompt_id"] for r in rows}


def test_check_names_catches_a_misspelt_field(filled: FilledDatabase) -> None:
    schema = Schema(filled)
    query = 'SELECT mean("latency_p95") FROM "llm_window" WHERE time > now() - 1h'
    assert filled.rows(query) == []  # InfluxQL: an unknown field is no error, just no rows
    with pytest.raises(AssertionError, match="latency_p95"):
        check_names(query, schema)
