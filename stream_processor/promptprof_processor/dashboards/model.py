"""Builders for the parts of Grafana's dashboard JSON model that the dashboards use.

Every query is raw InfluxQL against the provisioned InfluxDB data source (uid
:data:`DATASOURCE_UID`). Conventions the tests rely on: field, tag and measurement names are
always double-quoted (``"latency_p95_ms"``), aliases never are (``AS p95``), and string literals
use single quotes (``'10s'``), so that every double-quoted name in a query can be checked
against ``SHOW FIELD KEYS`` and ``SHOW TAG KEYS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

DATASOURCE_UID = "promptprof-influxdb"
DATASOURCE: JSON = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
GRID_COLUMNS = 24
REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def regex_match(tag: str, variable: str) -> str:
    """An InfluxQL condition matching ``tag`` against a (possibly multi-value) variable."""
    return f'"{tag}" =~ /^${variable}$/'


def where(*conditions: str) -> str:
    """A WHERE clause joining ``conditions`` and Grafana's ``$timeFilter``."""
    return "WHERE " + " AND ".join([*conditions, "$timeFilter"])


def target(query: str, *, ref: str = "A", alias: str | None = None, table: bool = False) -> JSON:
    """A raw InfluxQL query of a panel."""
    out: JSON = {
        "refId": ref,
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        out["alias"] = alias
    return out


def targets(*queries: tuple[str, str | None]) -> list[JSON]:
    """Targets for ``(query, alias)`` pairs, with refIds A, B, C..."""
    return [target(q, ref=REF_IDS[i], alias=a) for i, (q, a) in enumerate(queries)]


def field_config(unit: str | None = None, **defaults: Any) -> JSON:
    """A fieldConfig with ``unit`` and further defaults, no overrides."""
    values: JSON = {"unit": unit} if unit else {}
    return {"defaults": {**values, **defaults}, "overrides": []}


def thresholds(*steps: tuple[float, str]) -> JSON:
    """Absolute thresholds: green below the first step, then each step's colour."""
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": colour, "value": value} for value, colour in steps],
    }


def panel(kind: str, title: str, description: str, queries: list[JSON], **extra: Any) -> JSON:
    """A panel without position or id (the :class:`Layout` sets both)."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        **extra,
    }


def timeseries(
    title: str, description: str, queries: list[JSON], unit: str, *, bars: bool = False,
    stacked: bool = False, min_interval: str | None = None,
) -> JSON:
    """A time series panel (lines, or stacked bars)."""
    custom: JSON = {"drawStyle": "bars" if bars else "line", "fillOpacity": 60 if bars else 10,
                    "showPoints": "never", "spanNulls": True}
    if stacked:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    extra: JSON = {"interval": min_interval} if min_interval else {}
    return panel(
        "timeseries", title, description, queries,
        fieldConfig=field_config(unit, custom=custom),
        options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
                 "tooltip": {"mode": "multi", "sort": "desc"}},
        **extra,
    )


def stat(title: str, description: str, query: str, unit: str, **defaults: Any) -> JSON:
    """A single-value panel."""
    return panel(
        "stat", title, description, [target(query)],
        fieldConfig=field_config(unit, **defaults),
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "colorMode": "value", "graphMode": "none", "textMode": "auto"},
    )


def table(title: str, description: str, query: str, sort_by: str, *, limit: int = 10,
          units: dict[str, str] | None = None) -> JSON:
    """A table of one table-format query, sorted descending by ``sort_by``, Time column hidden."""
    overrides = [
        {"matcher": {"id": "byName", "options": name},
         "properties": [{"id": "unit", "value": unit}]}
        for name, unit in (units or {}).items()
    ]
    return panel(
        "table", title, description, [target(query, table=True)],
        fieldConfig={"defaults": {}, "overrides": overrides},
        options={"showHeader": True, "cellHeight": "sm"},
        transformations=[
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
            {"id": "sortBy", "options": {"sort": [{"field": sort_by, "desc": True}]}},
            {"id": "limit", "options": {"limitField": limit}},
        ],
    )


def xychart(title: str, description: str, query: str, x: str, y: str, series_by: list[str],
            unit_x: str, unit_y: str) -> JSON:
    """A scatter plot of one table-format query, one series per value of ``series_by``."""
    return panel(
        "xychart", title, description, [target(query, table=True)],
        fieldConfig={
            "defaults": {"custom": {"show": "points", "pointSize": {"fixed": 10}}},
            "overrides": [
                {"matcher": {"id": "byName", "options": name},
                 "properties": [{"id": "unit", "value": unit}]}
                for name, unit in ((x, unit_x), (y, unit_y))
            ],
        },
        options={"seriesMapping": "auto", "dims": {"x": x},
                 "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                 "tooltip": {"mode": "single"}},
        transformations=[
            {"id": "partitionByValues", "options": {"fields": series_by, "keepFields": False}},
        ],
    )


def query_variable(name: str, label: str, query: str, *, multi: bool = False,
                   current: str | None = None) -> JSON:
    """A template variable filled by an InfluxQL ``SHOW TAG VALUES`` query; ``multi`` ones
    offer All. Values are sorted numerically (``10s`` before ``60s``)."""
    variable: JSON = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 3,
        "multi": multi,
        "includeAll": multi,
        "hide": 0,
    }
    if current is not None:
        variable["current"] = {"selected": True, "text": current, "value": current}
    return variable


def textbox_variable(name: str, label: str, default: str, description: str) -> JSON:
    """A free-text variable with a default, e.g. a budget."""
    return {
        "name": name, "label": label, "type": "textbox", "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "description": description, "hide": 0,
    }


def annotation(name: str, query: str, text: str, tags: list[str], colour: str) -> JSON:
    """An InfluxQL annotation query, in both the current (``target``) and the legacy form."""
    columns = {"textColumn": text, "tagsColumn": ",".join(tags), "titleColumn": ""}
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": colour,
        "query": query,
        **columns,
        "target": {"refId": "Anno", "query": query, "rawQuery": True, "resultFormat": "table",
                   "fromAnnotations": True, **columns},
    }


BUILTIN_ANNOTATIONS: JSON = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


@dataclass
class Layout:
    """Places panels left to right in rows of 24 columns and numbers them."""

    panels: list[JSON] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0

    def add(self, item: JSON, w: int, h: int) -> None:
        """Append ``item`` with a ``w`` x ``h`` grid position, wrapping to a new row."""
        if self._x + w > GRID_COLUMNS:
            self._x, self._y, self._row_height = 0, self._y + self._row_height, 0
        item["id"] = len(self.panels) + 1
        item["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        self.panels.append(item)
        self._x += w
        self._row_height = max(self._row_height, h)

    def row(self, title: str) -> None:
        """A collapsible row header across the whole width."""
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)


def dashboard(uid: str, title: str, description: str, layout: Layout,
              variables: list[JSON], annotations: list[JSON]) -> JSON:
    """A whole dashboard with the promptprof tag, links to its siblings and a 1 h default range."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["promptprof"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "links": [{"type": "dashboards", "tags": ["promptprof"], "asDropdown": False,
                   "includeVars": False, "keepTime": True, "title": "promptprof"}],
        "templating": {"list": variables},
        "annotations": {"list": [BUILTIN_ANNOTATIONS, *annotations]},
        "panels": layout.panels,
    }
