"""Grafana dashboards built from code: ``python -m promptprof_processor.dashboards [DIR]``
writes them as JSON files (default ``grafana/dashboards``), which Grafana's file provisioning
loads. Tests check that the committed files are what this code builds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from promptprof_processor.dashboards.health import health
from promptprof_processor.dashboards.model import JSON
from promptprof_processor.dashboards.overview import overview
from promptprof_processor.dashboards.prompt import drilldown

DEFAULT_DIR = Path("grafana/dashboards")
BUILDERS: dict[str, Callable[[], JSON]] = {
    "promptprof-health.json": health,
    "promptprof-overview.json": overview,
    "promptprof-prompt.json": drilldown,
}


def render(dashboard: JSON) -> str:
    """A dashboard as the text of its file (indented JSON, trailing newline)."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name -> file text of every dashboard."""
    return {name: render(build()) for name, build in BUILDERS.items()}


def write_dashboards(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every dashboard into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
