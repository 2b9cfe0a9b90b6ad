"""Grafana dashboards built from code: ``python -m promptprof_processor.dashboards [DIR]``
writes them as JSON files (default ``grafana/dashboards``), which Grafana's file provisioning
loads. Tests check that the committed files are what this code builds.

The window dashboards are built for a :class:`~promptprof_processor.dashboards.widths.WindowLayout`
(the widths the workers write and their retention policies): the committed files for the default
settings; ``python -m promptprof_processor.dashboards`` builds them for the settings it loads
(environment, ``PROMPTPROF_CONFIG``), so a deployment with other widths or retention per width
generates its own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

from promptprof_processor.dashboards.health import health
from promptprof_processor.dashboards.model import JSON
from promptprof_processor.dashboards.overview import overview
from promptprof_processor.dashboards.prompt import drilldown
from promptprof_processor.dashboards.widths import WindowLayout

DEFAULT_DIR = Path("grafana/dashboards")
BUILDERS: dict[str, Callable[[], JSON]] = {
    "promptprof-health.json": health,
    "promptprof-overview.json": overview,
    "promptprof-prompt.json": drilldown,
}


def render(dashboard: JSON) -> str:
    """A dashboard as the text of its file (indented JSON, trailing newline)."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def build(name: str, windows: WindowLayout | None = None) -> JSON:
    """The dashboard ``name``, for ``windows`` when given and its builder reads windows."""
    builder = BUILDERS[name]
    if windows is not None and "windows" in inspect.signature(builder).parameters:
        return builder(windows=windows)  # type: ignore[call-arg]
    return builder()


def rendered(windows: WindowLayout | None = None) -> dict[str, str]:
    """File name -> file text of every dashboard."""
    return {name: render(build(name, windows)) for name in BUILDERS}


def write_dashboards(directory: Path = DEFAULT_DIR,
                     windows: WindowLayout | None = None) -> list[Path]:
    """Write every dashboard into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered(windows).items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
