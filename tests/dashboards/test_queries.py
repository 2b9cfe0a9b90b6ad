"""Every query of every dashboard, run against InfluxDB after the real pipeline filled it.

Template variables are resolved the way Grafana does: each query variable's ``SHOW TAG VALUES``
query runs (with the variables before it filled in) and must return values; a single-value
variable takes one of them, a multi-value one all of them (Grafana's ``(a|b)`` regex form).
Grafana's own variables get the values of a time range: ``$timeFilter`` ->
``time > now() - <range>s``, ``$__range_s`` -> the range. The dashboards are built for the
filled database's widths (1 s, 5 s, and 10 s rolled up), and each test runs over three ranges,
each of which chooses one of those widths. Then every panel target and annotation query must
return rows (a target of one width only when that width is chosen, none otherwise), and every
double-quoted name in it must be a measurement, field or tag that the sink wrote (InfluxQL
answers an unknown field with an empty result, not an error).

Percentiles: every point of every percentile panel is compared with the exact percentile of the
calls of its window and series (read back from the calls topic), which it must match within the
sketch's 1% relative accuracy; a "worst window" column with the highest exact percentile of
that series' windows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from processor.factories import within_sketch_error
from processor_integration.conftest import exact_quantile

from dashboards.filled import ALL_WIDTHS_S, SLOW_PROMPT, Call, FilledDatabase
from promptprof_processor.dashboards import BUILDERS
from promptprof_processor.dashboards import build as build_dashboard
from promptprof_processor.dashboards.model import JSON
from promptprof_processor.dashboards.widths import WindowLayout, chosen_width
from promptprof_processor.units import NS_PER_S

pytestmark = pytest.mark.integration

FILLED_LAYOUT = WindowLayout(ALL_WIDTHS_S)
# a time range choosing each width of the filled database
RANGES_S = (1200, 3600, 86_400)
ONE_WIDTH = re.compile(r"\"width\" = '(\d+)s'")
PERCENTILE = re.compile(r'(?:max\()?"((latency|ttft)_p(\d+)_ms|quality_p(10))"\)?(?: AS (\w+))?')
VALUE_OF: dict[str, Callable[[Call], float | None]] = {
    "latency": lambda c: c.latency_ms, "ttft": lambda c: c.ttft_ms, "quality": lambda c: c.quality,
}
# the drill-down shows this prompt: it has two versions to overlay
DRILLDOWN_PROMPT = "support-answer"
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
QUOTED = re.compile(r'"([^"]+)"')
SOURCES = re.compile(r'FROM ((?:"[^"]+"\.)?"[^"]+"(?:, (?:"[^"]+"\.)?"[^"]+")*)')
SOURCE = re.compile(r'(?:"([^"]+)"\.)?"([^"]+)"')
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


def grafana_variables(range_s: int = 3600) -> dict[str, str]:
    """Grafana's own variables over the last ``range_s`` seconds."""
    interval_s = max(1, range_s // 1000)  # Grafana: about the range over the panel's points
    return {"timeFilter": f"time > now() - {range_s}s", "__range_s": str(range_s),
            "__interval": f"{interval_s}s", "__interval_ms": str(interval_s * 1000)}


def build(name: str, windows: WindowLayout = FILLED_LAYOUT) -> JSON:
    """A dashboard built for the filled database's widths."""
    return build_dashboard(name, windows)


def resolve_variables(dashboard: JSON, filled: FilledDatabase,
                      range_s: int = 3600) -> dict[str, str]:
    """Variable name -> substituted text, resolving query variables in order."""
    values = grafana_variables(range_s)
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
        """Fields and tags of ``measurement`` (``"rp"."name"`` or ``"name"``; empty when it
        does not exist)."""
        if measurement not in self._keys:
            fields = self.filled.rows(f"SHOW FIELD KEYS FROM {measurement}")
            tags = self.filled.rows(f"SHOW TAG KEYS FROM {measurement}")
            self._keys[measurement] = {str(r["fieldKey"]) for r in fields} | {
                str(r["tagKey"]) for r in tags
            }
        return self._keys[measurement]


def check_names(query: str, schema: Schema) -> None:
    """Every double-quoted name in ``query`` is its measurement or one of its fields/tags."""
    sources = [SOURCE.findall(found) for found in SOURCES.findall(query)]
    assert sources, f"no FROM in {query}"
    named = [(policy, name) for found in sources for policy, name in found]
    quoted = [f'"{p}"."{m}"' if p else f'"{m}"' for p, m in named]
    known = {name for pair in named for name in pair if name}
    known = known.union(*(schema.names(q) for q in quoted))
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


def target_width(query: str) -> int | None:
    """The one width a target reads, or None when it reads the chosen width whatever it is."""
    widths = ONE_WIDTH.findall(query)
    return int(widths[0]) if len(widths) == 1 else None


@pytest.mark.parametrize("range_s", RANGES_S)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_query_returns_rows_with_known_names(
    name: str, range_s: int, deployment: tuple[FilledDatabase, WindowLayout]
) -> None:
    filled, windows = deployment
    dashboard = build(name, windows)
    values = resolve_variables(dashboard, filled, range_s)
    chosen = chosen_width(ALL_WIDTHS_S, range_s)
    schema = Schema(filled)
    checked = 0
    for where, query, owner in queries(dashboard):
        text = substitute(query, values)
        rows = filled.rows(text)
        check_names(text, schema)
        if target_width(query) not in (None, chosen):
            assert not rows, f"{name}: {where} reads another width than {chosen}s: {text}"
            continue
        assert rows, f"{name}: {where} returned no rows: {text}"
        check_panel_columns(owner, rows)
        checked += 1
    assert checked >= 10


def test_the_ranges_choose_every_width() -> None:
    assert [chosen_width(ALL_WIDTHS_S, r) for r in RANGES_S] == list(ALL_WIDTHS_S)


def series_calls(filled: FilledDatabase, row: dict[str, Any]) -> list[Call]:
    """The calls of the row's series (the drill-down's rows are of its one prompt)."""
    series = (row.get("prompt_id", DRILLDOWN_PROMPT), row["prompt_version"], row["model"])
    return [c for c in filled.calls if (c.prompt_id, c.prompt_version, c.model) == series]


def window_calls(filled: FilledDatabase, row: dict[str, Any], width_s: int) -> list[Call]:
    """The calls of the row's series in the window starting at the row's time."""
    start = int(row["time"])
    end = start + width_s * NS_PER_S
    return [c for c in series_calls(filled, row) if start <= c.start_ns < end]


def exact(calls: list[Call], metric: str, percentile: int) -> float:
    """The exact percentile of a metric over calls."""
    values = [v for v in map(VALUE_OF[metric], calls) if v is not None]
    return exact_quantile(values, percentile / 100)


def series_windows(filled: FilledDatabase, row: dict[str, Any], width_s: int,
                   range_s: int) -> list[list[Call]]:
    """The calls of each window of the row's series that starts within the range."""
    since, width_ns = time.time_ns() - range_s * NS_PER_S, width_s * NS_PER_S
    by_start: dict[int, list[Call]] = {}
    for call in series_calls(filled, row):
        start = call.start_ns - call.start_ns % width_ns
        if start > since:
            by_start.setdefault(start, []).append(call)
    return list(by_start.values())


def percentile_columns(query: str) -> list[tuple[str, str, int]]:
    """(result column, metric, percentile) of each percentile a query selects."""
    found = []
    for match in PERCENTILE.finditer(query):
        field, metric, high, low, alias = match.groups()
        column = alias or field
        found.append((column, metric or "quality", int(high or low)))
    return found


@pytest.mark.parametrize("range_s", RANGES_S)
@pytest.mark.parametrize("name", ["promptprof-overview.json", "promptprof-prompt.json"])
def test_every_percentile_shown_is_one_of_the_calls_behind_it(
    name: str, range_s: int, deployment: tuple[FilledDatabase, WindowLayout]
) -> None:
    filled, windows = deployment
    dashboard = build(name, windows)
    values = resolve_variables(dashboard, filled, range_s)
    width = chosen_width(ALL_WIDTHS_S, range_s)
    checked = 0
    for where, query, _ in queries(dashboard):
        columns = percentile_columns(query)
        if not columns:
            continue
        rows = filled.rows(substitute(query, values))
        for row in rows:
            for column, metric, percentile in columns:
                if row.get(column) is None:
                    continue
                if query.startswith(f'SELECT "{metric}'):  # each window's own percentile
                    expected = exact(window_calls(filled, row, width), metric, percentile)
                else:  # the highest window percentile of the series over the range
                    windows = series_windows(filled, row, width, range_s)
                    expected = max(exact(calls, metric, percentile) for calls in windows
                                   if any(VALUE_OF[metric](c) is not None for c in calls))
                assert within_sketch_error(row[column], expected), (where, row, expected)
                checked += 1
    assert checked >= 30


def test_variable_queries_name_known_tags(filled: FilledDatabase) -> None:
    schema = Schema(filled)
    for name in BUILDERS:
        for variable in build(name)["templating"]["list"]:
            if variable["type"] == "query":
                check_names(variable["query"], schema)


def test_drilldown_overlays_the_versions_of_one_prompt(filled: FilledDatabase) -> None:
    dashboard = build("promptprof-prompt.json")
    values = resolve_variables(dashboard, filled)
    assert values["prompt"] == DRILLDOWN_PROMPT
    latency = next(p for p in dashboard["panels"] if p["title"].startswith("Latency"))
    rows = filled.rows(substitute(latency["targets"][0]["query"], values))
    assert {r["prompt_version"] for r in rows} == {"v3", "v4"}


def test_overview_shows_every_prompt(filled: FilledDatabase) -> None:
    dashboard = build("promptprof-overview.json")
    values = resolve_variables(dashboard, filled)
    calls = next(p for p in dashboard["panels"] if p["title"] == "Calls per second"
                 and p["type"] == "timeseries")
    rows = [row for t in calls["targets"] for row in filled.rows(substitute(t["query"], values))]
    assert {r["prompt_id"] for r in rows} == {prompt for prompt, _, _ in filled.series}
    assert SLOW_PROMPT in {r["prompt_id"] for r in rows}


def test_check_names_catches_a_misspelt_field(filled: FilledDatabase) -> None:
    schema = Schema(filled)
    query = 'SELECT mean("latency_p95") FROM "llm_window" WHERE time > now() - 1h'
    assert filled.rows(query) == []  # InfluxQL: an unknown field is no error, just no rows
    with pytest.raises(AssertionError, match="latency_p95"):
        check_names(query, schema)
