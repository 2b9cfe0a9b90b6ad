"""The report's charts, drawn with matplotlib (no pyplot, no display) into PNG bytes.

A prompt keeps its colour in every chart. Times are shown in UTC.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, PercentFormatter
from numpy.typing import NDArray

from promptprof_processor.report.queries import Points, ReportData

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
SEVERITY_COLOURS = {"critical": "#b71c1c", "error": "#d32f2f", "warning": "#f57c00",
                    "info": "#1976d2"}
Colours = dict[str, str]


@dataclass(frozen=True)
class Chart:
    """One chart: a file-friendly name, a title and the PNG image."""

    name: str
    title: str
    png: bytes


def colours_for(prompts: Sequence[str]) -> Colours:
    """A stable colour per prompt id."""
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted(prompts))}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _dates(epoch_ms: Sequence[int]) -> NDArray[np.datetime64]:
    return np.array(epoch_ms, dtype=np.int64).astype("datetime64[ms]")


def _time_axis(axes: Axes) -> None:
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.grid(True, alpha=0.3)


def _lines(axes: Axes, by_prompt: dict[str, Points], colours: Colours, title: str,
           ylabel: str) -> None:
    for prompt, points in sorted(by_prompt.items()):
        # a prompt's line: the prompt's colour; a series' line (latency): the next of the cycle
        axes.plot(_dates(points.times), points.values, label=prompt, color=colours.get(prompt),
                  linewidth=1.6, marker="o" if len(points.times) < 3 else None, markersize=3)
    axes.set_title(title, fontsize=10, loc="left")
    axes.set_ylabel(ylabel)
    _time_axis(axes)


def _panels(data: ReportData, colours: Colours, panels: Sequence[tuple[str, str, str]],
            configure: Callable[[Axes], None] | None = None, lines: str = "prompt") -> bytes:
    """A figure of stacked time-series panels ``(metric, title, y label)``, one legend."""
    figure = Figure(figsize=(10, 2.6 * len(panels) + 0.4), layout="constrained")
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (metric, title, ylabel) in zip(axes_list, panels, strict=True):
        _lines(axes, data.series.get(metric, {}), colours, title, ylabel)
        if configure:
            configure(axes)
    handles, labels = axes_list[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside right upper", fontsize=9, title=lines)
    return _png(figure)


def latency_chart(data: ReportData, colours: Colours) -> bytes:
    """p50, p95 and p99 latency of each window, per series, over time."""
    return _panels(data, colours, [(p, f"latency {p}", "ms") for p in ("p50", "p95", "p99")],
                   lines="prompt version model")


def error_chart(data: ReportData, colours: Colours) -> bytes:
    """Error rate per prompt over time."""
    return _panels(data, colours, [("error_rate", "error rate", "errors / calls")],
                   lambda axes: axes.yaxis.set_major_formatter(PercentFormatter(1.0)))


def token_chart(data: ReportData, colours: Colours) -> bytes:
    """Input and output tokens per minute per prompt."""
    return _panels(data, colours, [("input_tokens", "input tokens per minute", "tokens/min"),
                                   ("output_tokens", "output tokens per minute", "tokens/min")],
                   lambda axes: axes.yaxis.set_major_formatter(EngFormatter()))


def cost_chart(data: ReportData, colours: Colours) -> bytes:
    """Cost rate (USD per hour) per prompt over time."""
    return _panels(data, colours, [("cost", "cost rate", "USD / hour")],
                   lambda axes: axes.yaxis.set_major_formatter(FuncFormatter(_usd)))


def _usd(value: float, _position: Any = None) -> str:
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.2g}"


def quality_cost_chart(data: ReportData, colours: Colours) -> bytes:
    """Mean quality against cost per call, one labelled point per prompt version."""
    figure = Figure(figsize=(10, 5), layout="constrained")
    axes = figure.subplots()
    largest = max((float(r["calls"] or 0) for r in data.quality_cost), default=1.0) or 1.0
    for row in data.quality_cost:
        prompt = str(row["prompt_id"])
        size = 40 + 400 * float(row["calls"] or 0) / largest
        axes.scatter(row["cost_per_call"], row["quality"], s=size, color=colours.get(prompt),
                     alpha=0.75, edgecolors="black", linewidths=0.5)
        axes.annotate(f"{prompt} {row['prompt_version']}",
                      (row["cost_per_call"], row["quality"]), textcoords="offset points",
                      xytext=(8, 6), fontsize=9)
    axes.set_xlabel("cost per call (USD)")
    axes.set_ylabel("mean quality score")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"${v:.2g}"))
    axes.set_title("quality against cost per prompt version (area = calls)", fontsize=10,
                   loc="left")
    axes.grid(True, alpha=0.3)
    axes.margins(0.15)
    return _png(figure)


def alert_chart(data: ReportData, colours: Colours) -> bytes:
    """Alerts over time, one row per prompt, coloured by severity."""
    prompts = sorted({str(a["prompt_id"]) for a in data.alerts})
    figure = Figure(figsize=(10, 1.2 + 0.5 * len(prompts)), layout="constrained")
    axes = figure.subplots()
    for severity in sorted({str(a["severity"]) for a in data.alerts}):
        chosen = [a for a in data.alerts if str(a["severity"]) == severity]
        times = _dates([int(a["time"]) for a in chosen])
        rows = [prompts.index(str(a["prompt_id"])) for a in chosen]
        axes.scatter(times, rows, marker="D", s=60, label=severity,
                     color=SEVERITY_COLOURS.get(severity, "#616161"))
    axes.set_yticks(range(len(prompts)), prompts)
    axes.set_ylim(-0.7, len(prompts) - 0.3)
    axes.set_title("alerts", fontsize=10, loc="left")
    figure.legend(loc="outside right upper", fontsize=9, title="severity")
    if data.scope is not None:  # the same time range as the other charts
        first, last = data.scope.first_ms, data.scope.last_ms + data.scope.bucket_s * 1000
        times = _dates([first, max(last, *(int(a["time"]) for a in data.alerts))])
        axes.set_xlim(times[0], times[1])
    _time_axis(axes)
    return _png(figure)


CHARTS: tuple[tuple[str, str, Callable[[ReportData, Colours], bytes]], ...] = (
    ("latency", "Latency percentiles per series, each window's own", latency_chart),
    ("error-rate", "Error rate per prompt", error_chart),
    ("tokens", "Input and output tokens per prompt", token_chart),
    ("cost", "Cost per prompt", cost_chart),
    ("quality-cost", "Quality against cost per prompt version", quality_cost_chart),
    ("alerts", "Alerts timeline", alert_chart),
)


def render_charts(data: ReportData) -> list[Chart]:
    """Every chart that has something to show (none without windows; alerts only if any)."""
    if not data.summary:
        return []
    colours = colours_for(data.prompts)
    skip = {"quality-cost"} if not data.quality_cost else set()
    if not data.alerts:
        skip.add("alerts")
    return [Chart(name, title, draw(data, colours)) for name, title, draw in CHARTS
            if name not in skip]
