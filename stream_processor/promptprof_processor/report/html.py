"""The report page: one HTML file with inline style and charts as base64 PNG images, so that it
opens anywhere without a network."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from promptprof_processor.report.charts import Chart
from promptprof_processor.report.influxql import Row
from promptprof_processor.report.queries import ReportData

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #212121; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #e0e0e0; }
.meta { color: #616161; font-size: .9rem; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; margin: .8rem 0; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #eeeeee; text-align: right; }
th { background: #fafafa; } td.text, th.text { text-align: left; }
img { max-width: 100%; display: block; margin: .6rem 0; }
.empty { color: #757575; font-style: italic; }
"""
Formatter = Callable[[Any], str]


def _number(digits: int) -> Formatter:
    return lambda v: "-" if v is None else f"{v:,.{digits}f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _usd(value: Any) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4g}"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _time(epoch_ms: Any) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


SUMMARY_COLUMNS: tuple[tuple[str, str, Formatter], ...] = (
    ("service", "service", _text), ("prompt_id", "prompt", _text),
    ("prompt_version", "version", _text), ("model", "model", _text),
    ("calls", "calls", _number(0)), ("error_rate", "error rate", _percent),
    ("p50_worst", "worst p50 ms", _number(0)), ("p95_worst", "worst p95 ms", _number(0)),
    ("p99_worst", "worst p99 ms", _number(0)),
    ("ttft_p50_worst", "worst TTFT p50 ms", _number(0)),
    ("input_tokens", "in tokens/call", _number(0)),
    ("output_tokens", "out tokens/call", _number(0)),
    ("cost", "cost", _usd), ("quality", "quality", _number(3)),
)
ALERT_TABLE_COLUMNS: tuple[tuple[str, str, Formatter], ...] = (
    ("time", "time (UTC)", _time), ("prompt_id", "prompt", _text),
    ("prompt_version", "version", _text), ("rule", "rule", _text),
    ("severity", "severity", _text), ("state", "state", _text),
    ("observed", "observed", _number(1)),
    ("baseline", "baseline", _number(1)), ("threshold", "threshold", _number(1)),
    ("message", "message", _text),
)
TEXT_COLUMNS = {"service", "prompt_id", "prompt_version", "model", "rule", "severity", "state",
                "message", "time"}
MAX_ALERT_ROWS = 100


def table(rows: Sequence[Row], columns: Sequence[tuple[str, str, Formatter]]) -> str:
    """An HTML table of ``rows`` with ``(key, heading, formatter)`` columns, escaped."""
    def cell(tag: str, key: str, text: str) -> str:
        css = ' class="text"' if key in TEXT_COLUMNS else ""
        return f"<{tag}{css}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", key, heading) for key, heading, _ in columns)
    body = "\n".join(
        "<tr>" + "".join(cell("td", key, fmt(row.get(key))) for key, _, fmt in columns) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def image(chart: Chart) -> str:
    """An <img> embedding the chart's PNG."""
    encoded = base64.b64encode(chart.png).decode()
    return (f'<img id="chart-{chart.name}" alt="{html.escape(chart.title)}" '
            f'src="data:image/png;base64,{encoded}">')


def _meta(data: ReportData, source: str) -> str:
    scope = data.scope
    when = data.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    what = (f"windows from {_time(scope.first_ms)} to {_time(scope.last_ms)} UTC "
            f"(asked: the last {scope.since_s:,} s), {scope.width} windows in "
            f"{scope.bucket_s} s buckets; percentiles: each window's own, worst: the highest "
            "window's" if scope else "no windows found")
    return f'<p class="meta">{html.escape(f"{when} · {what} · {source}")}</p>'


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


def build_html(data: ReportData, charts: Sequence[Chart], source: str) -> str:
    """The whole page: summary table, one section per chart, and the alerts table."""
    sections = [_section("Summary", table(data.summary, SUMMARY_COLUMNS) if data.summary
                         else _empty("No windows in InfluxDB for this range."))]
    sections += [_section(chart.title, image(chart)) for chart in charts]
    alerts = data.alerts[:MAX_ALERT_ROWS]
    sections.append(_section("Alerts", table(alerts, ALERT_TABLE_COLUMNS) if alerts
                             else _empty("No alerts in this range.")))
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>promptprof report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>promptprof report</h1>\n{_meta(data, source)}\n{body}\n</body>\n</html>\n"
    )
