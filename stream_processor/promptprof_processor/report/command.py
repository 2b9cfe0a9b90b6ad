"""``promptprof report``: read the last ``since`` of window figures and alerts from InfluxDB
and write one self-contained HTML file (and, on request, the charts as PNG files)."""

from __future__ import annotations

import sys
from pathlib import Path

from promptprof_processor.report.charts import Chart, render_charts
from promptprof_processor.report.html import build_html
from promptprof_processor.report.influxql import InfluxQLClient, InfluxQLError
from promptprof_processor.report.queries import ReportData, fetch, parse_since
from promptprof_processor.settings import ProcessorSettings

EXIT_OK = 0
EXIT_NO_DATA = 1
EXIT_ERROR = 2


def report_command(settings: ProcessorSettings, since: str, out: Path, png_dir: Path | None) -> int:
    """Write the report; 0 when written with data, 1 when written but the range holds no
    windows, 2 on a bad ``since`` or when InfluxDB cannot be read (nothing written)."""
    try:
        since_s = parse_since(since)
        with InfluxQLClient(settings.influx) as client:
            data = fetch(client, since_s)
    except (ValueError, InfluxQLError) as exc:
        print(f"promptprof report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    charts = render_charts(data)
    source = f"{settings.influx.url} database {settings.influx.database}"
    write_report(data, charts, source, out, png_dir)
    print(_said(data, charts, out, png_dir))
    return EXIT_OK if data.summary else EXIT_NO_DATA


def write_report(data: ReportData, charts: list[Chart], source: str, out: Path,
                 png_dir: Path | None) -> None:
    """Write the HTML file and, with ``png_dir``, one PNG file per chart."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_html(data, charts, source), encoding="utf-8")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for chart in charts:
            (png_dir / f"{chart.name}.png").write_bytes(chart.png)


def _said(data: ReportData, charts: list[Chart], out: Path, png_dir: Path | None) -> str:
    if not data.summary:
        return f"wrote {out}: no windows in InfluxDB for this range"
    pngs = f"; {len(charts)} PNG charts in {png_dir}" if png_dir is not None else ""
    return (f"wrote {out}: {len(data.summary)} series of {len(data.prompts)} prompts, "
            f"{len(data.alerts)} alerts{pngs}")
