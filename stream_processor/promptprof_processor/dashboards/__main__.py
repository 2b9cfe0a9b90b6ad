"""``python -m promptprof_processor.dashboards [DIR]``: write the dashboards' JSON files."""

from __future__ import annotations

import sys
from pathlib import Path

from promptprof_processor.dashboards import DEFAULT_DIR, write_dashboards


def main(argv: list[str]) -> int:
    """Write the dashboards into ``argv[0]`` (default grafana/dashboards) and list them."""
    for path in write_dashboards(Path(argv[0]) if argv else DEFAULT_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
