"""``python -m promptprof_processor.dashboards [DIR]``: write the dashboards' JSON files."""

from __future__ import annotations

import sys
from pathlib import Path

from promptprof import load_settings
from promptprof_processor.dashboards import DEFAULT_DIR, write_dashboards
from promptprof_processor.dashboards.widths import WindowLayout
from promptprof_processor.settings import ProcessorSettings


def main(argv: list[str]) -> int:
    """Write the dashboards, for the window layout of the settings loaded, into ``argv[0]``
    (default grafana/dashboards) and list them."""
    windows = WindowLayout.of(load_settings(None, ProcessorSettings))
    for path in write_dashboards(Path(argv[0]) if argv else DEFAULT_DIR, windows):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
