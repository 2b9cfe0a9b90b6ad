"""``promptprof report``: a self-contained HTML report (and PNG charts) read from InfluxDB.

Modules: :mod:`.influxql` (the InfluxQL client), :mod:`.queries` (what is read),
:mod:`.charts` (matplotlib), :mod:`.html` (the page) and :mod:`.command` (the CLI entry).
"""

from __future__ import annotations

from promptprof_processor.report.command import report_command

__all__ = ["report_command"]
