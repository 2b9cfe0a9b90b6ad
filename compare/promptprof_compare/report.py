"""Render a :class:`~promptprof_compare.stats.Comparison` as Markdown, JSON or a standalone page.

Markdown is meant for a pull-request comment: one summary line with the overall verdict, then a
table per prompt. JSON is the comparison model itself (stable keys, in declaration order). The
HTML page embeds its charts as base64 PNG images and its style inline, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from promptprof_compare.runfile import CallRecord, RunFile, RunMetadata
from promptprof_compare.stats import Comparison, MetricComparison, PromptComparison, Verdict

VERDICT_WORDS: dict[Verdict, str] = {
    "regression": "regression",
    "improvement": "improvement",
    "no_change": "no change",
}
VERDICT_COLOURS: dict[Verdict, str] = {
    "regression": "#c62828",
    "improvement": "#2e7d32",
    "no_change": "#757575",
}
TABLE_HEADER = ("metric", "base", "candidate", "change", "interval", "p (corrected)", "verdict")
SMALL_P = 1e-4
FIGURE_DPI = 100


def render_json(comparison: Comparison) -> str:
    """The comparison as indented JSON with stable keys."""
    return comparison.model_dump_json(indent=2) + "\n"


def _format_value(metric: MetricComparison, value: float) -> str:
    if metric.unit == "ms":
        return f"{value:,.0f} ms" if value >= 100 else f"{value:,.1f} ms"
    if metric.unit == "USD":
        return f"${value:.3g}"
    if metric.unit == "fraction":
        return f"{value:.2%}"
    if metric.unit == "score":
        return f"{value:.3f}"
    return f"{value:,.1f}"


def _format_change(metric: MetricComparison, value: float) -> str:
    if metric.metric == "error_rate":
        return f"{value * 100:+.2f} pp"
    if metric.metric == "quality":
        return f"{value:+.3f}"
    return f"{value:+.1%}"


def format_change(metric: MetricComparison) -> str:
    """The change as shown in reports: relative (percent), or absolute for errors and quality."""
    if metric.interval_kind == "absolute":
        return _format_change(metric, metric.change)
    if metric.relative_change is None:
        return "from 0"
    return _format_change(metric, metric.relative_change)


def format_interval(metric: MetricComparison) -> str:
    """The interval of the change, in the same form as :func:`format_change`."""
    if metric.ci_low is None or metric.ci_high is None:
        return "n/a"
    return f"{_format_change(metric, metric.ci_low)} to {_format_change(metric, metric.ci_high)}"


def format_p(p_value: float) -> str:
    """A p-value with four decimals, or ``< 0.0001``."""
    return f"< {SMALL_P:.4f}" if p_value < SMALL_P else f"{p_value:.4f}"


def _row(metric: MetricComparison) -> tuple[str, ...]:
    return (
        metric.label,
        _format_value(metric, metric.base),
        _format_value(metric, metric.candidate),
        format_change(metric),
        format_interval(metric),
        format_p(metric.p_adjusted),
        VERDICT_WORDS[metric.verdict],
    )


def _regressed_labels(prompt: PromptComparison) -> list[str]:
    return [metric.label for metric in prompt.metrics if metric.verdict == "regression"]


def summary_line(comparison: Comparison) -> str:
    """One sentence with the overall verdict, naming what regressed."""
    count = len(comparison.prompts)
    prompts = f"{count} prompt{'' if count == 1 else 's'}"
    regressed = [prompt for prompt in comparison.prompts if prompt.verdict == "regression"]
    if regressed:
        names = "; ".join(
            f"`{prompt.prompt_id}` ({', '.join(_regressed_labels(prompt))})" for prompt in regressed
        )
        return f"**promptprof compare: regression** in {len(regressed)} of {prompts}: {names}."
    improved = ", ".join(
        f"`{prompt.prompt_id}`" for prompt in comparison.prompts if prompt.verdict == "improvement"
    )
    if improved:
        return f"**promptprof compare: no regression**, improvement in {improved} ({prompts})."
    return f"**promptprof compare: no regression**, no significant change ({prompts})."


def _describe_run(role: str, run: RunMetadata) -> str:
    ref = f", git `{run.git_ref}`" if run.git_ref else ""
    started = run.started_at.isoformat(timespec="seconds")
    return f"{role}: suite `{run.suite}`{ref}, {run.provider}, seed {run.seed}, started {started}"


def method_line(comparison: Comparison) -> str:
    """How significance was decided, in two sentences."""
    return (
        f"A change counts when its own test is significant in its direction (p < "
        f"{comparison.alpha:g} after {comparison.correction.capitalize()} correction over a "
        f"family of {comparison.family_size} tests: every metric of every prompt compared) and "
        "it exceeds both the relative and the absolute threshold. Tests: the quantile test for "
        "each latency and TTFT quantile (successful calls), a paired t-test over dataset items "
        "for mean tokens, cost (Welch's t when the runs share no item) and quality, Fisher "
        "exact or two-proportion z for errors; intervals are "
        f"{comparison.confidence:.0%} bootstrap intervals of the change."
    )


def all_calls_line(prompt: PromptComparison) -> str | None:
    """The untested latency quantiles over all calls, failed ones included, if computed."""
    if not prompt.latency_all_calls:
        return None
    parts = ", ".join(
        f"p{quantile.quantile * 100:g} {quantile.base_ms:,.0f} → {quantile.candidate_ms:,.0f} ms"
        for quantile in prompt.latency_all_calls
    )
    return f"Latency over all calls, failed ones included (as the dashboards count it): {parts}."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(metrics: Sequence[MetricComparison]) -> list[str]:
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "---|" * 3 + "---:|" * 3 + "---|",
    ]
    lines += ["| " + " | ".join(_cell(text) for text in _row(metric)) + " |" for metric in metrics]
    return lines


def _prompt_facts(prompt: PromptComparison) -> str:
    versions = f"{', '.join(prompt.base_versions)} → {', '.join(prompt.candidate_versions)}"
    models = f"{', '.join(prompt.base_models)} → {', '.join(prompt.candidate_models)}"
    calls = f"{prompt.base_calls} → {prompt.candidate_calls}"
    scorer = f"; quality scored by {prompt.quality_metric}" if prompt.quality_metric else ""
    return f"version {versions}; model {models}; calls {calls}{scorer}"


def monthly_cost_line(prompt: PromptComparison) -> str | None:
    """The monthly cost of both runs at the configured volume, if known."""
    cost = prompt.monthly_cost
    if cost is None:
        return None
    change = f" ({cost.candidate_usd / cost.base_usd - 1:+.1%})" if cost.base_usd else ""
    return (
        f"Monthly cost at {cost.volume:,} calls: ${cost.base_usd:,.2f} → "
        f"${cost.candidate_usd:,.2f}{change}."
    )


def _markdown_prompt(prompt: PromptComparison) -> list[str]:
    lines = [
        f"### `{prompt.prompt_id}`: {VERDICT_WORDS[prompt.verdict]}",
        "",
        _prompt_facts(prompt),
    ]
    lines += (
        ["", *_markdown_table(prompt.metrics)] if prompt.metrics else ["", "No metric compared."]
    )
    extra = [line for line in (all_calls_line(prompt), monthly_cost_line(prompt)) if line]
    lines += ["", *extra] if extra else []
    lines += ["", *(f"- {note}" for note in prompt.notes)] if prompt.notes else []
    return lines


def general_notes(comparison: Comparison) -> list[str]:
    """Notes about the runs as a whole (prompts present on one side only, suite mismatch)."""
    notes = list(comparison.notes)
    if comparison.only_in_base:
        notes.append(f"only in base, not compared: {', '.join(comparison.only_in_base)}")
    if comparison.only_in_candidate:
        notes.append(f"only in candidate, not compared: {', '.join(comparison.only_in_candidate)}")
    return notes


def render_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown for a pull-request comment."""
    lines = [
        summary_line(comparison),
        "",
        _describe_run("Base", comparison.base_run) + ".  ",
        _describe_run("Candidate", comparison.candidate_run) + ".  ",
        method_line(comparison),
    ]
    lines += (
        ["", *(f"- {note}" for note in general_notes(comparison))]
        if general_notes(comparison)
        else []
    )
    for prompt in comparison.prompts:
        lines += ["", *_markdown_prompt(prompt)]
    return "\n".join(lines) + "\n"


def _png_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _changes_figure(prompt: PromptComparison, confidence: float) -> Figure | None:
    metrics = [
        metric
        for metric in prompt.metrics
        if metric.interval_kind == "relative" and metric.relative_change is not None
    ]
    if not metrics:
        return None
    figure = Figure(figsize=(6.5, 0.45 * len(metrics) + 1.2))
    axes = figure.add_subplot()
    for row, metric in enumerate(reversed(metrics)):
        colour = VERDICT_COLOURS[metric.verdict]
        if metric.ci_low is not None and metric.ci_high is not None:
            axes.plot([metric.ci_low * 100, metric.ci_high * 100], [row, row], color=colour, lw=2)
        axes.plot([(metric.relative_change or 0.0) * 100], [row], "o", color=colour)
    axes.axvline(0, color="black", lw=0.8)
    axes.set_yticks(range(len(metrics)), [metric.label for metric in reversed(metrics)])
    axes.set_xlabel(f"change, candidate vs base (%), with {confidence:.0%} interval")
    axes.set_title("red: regression, green: improvement, grey: no change", fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    return figure


def _latencies(records: Iterable[CallRecord]) -> NDArray[np.float64]:
    return np.sort(
        np.array([record.latency_ms for record in records if record.status == "ok"], dtype=float)
    )


def _latency_figure(prompt_id: str, base: RunFile, candidate: RunFile) -> Figure | None:
    samples = {
        "base": _latencies(base.prompts.get(prompt_id, [])),
        "candidate": _latencies(candidate.prompts.get(prompt_id, [])),
    }
    if not all(len(values) for values in samples.values()):
        return None
    figure = Figure(figsize=(6.5, 3.2))
    axes = figure.add_subplot()
    for (name, values), colour in zip(samples.items(), ("#1565c0", "#ef6c00"), strict=True):
        fractions = np.arange(1, len(values) + 1) / len(values)
        axes.step(values, fractions, where="post", label=name, color=colour)
    axes.set_xlabel("latency of successful calls (ms)")
    axes.set_ylabel("fraction of calls")
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    return figure


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #212121; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #bdbdbd; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td:last-child { text-align: left; }
.regression { color: #c62828; font-weight: bold; }
.improvement { color: #2e7d32; font-weight: bold; }
.no_change { color: #616161; }
img { display: block; margin: 0.5rem 0; max-width: 100%; }
"""


def _html_table(metrics: Sequence[MetricComparison]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title in TABLE_HEADER)
    rows = []
    for metric in metrics:
        *cells, verdict = (html.escape(text) for text in _row(metric))
        body = "".join(f"<td>{cell}</td>" for cell in cells)
        rows.append(f'<tr>{body}<td class="{metric.verdict}">{verdict}</td></tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _html_figures(
    prompt: PromptComparison, confidence: float, base: RunFile, candidate: RunFile
) -> str:
    figures = [
        _changes_figure(prompt, confidence),
        _latency_figure(prompt.prompt_id, base, candidate),
    ]
    alts = ("relative change per metric", "latency distribution")
    return "".join(
        f'<img alt="{alt}" src="{_png_data_uri(figure)}">'
        for figure, alt in zip(figures, alts, strict=True)
        if figure is not None
    )


def _html_prompt(
    prompt: PromptComparison, confidence: float, base: RunFile, candidate: RunFile
) -> str:
    title = (
        f"<h2><code>{html.escape(prompt.prompt_id)}</code>: "
        f'<span class="{prompt.verdict}">{VERDICT_WORDS[prompt.verdict]}</span></h2>'
    )
    parts = [title, f"<p>{html.escape(_prompt_facts(prompt))}</p>"]
    parts.append(_html_table(prompt.metrics) if prompt.metrics else "<p>No metric compared.</p>")
    for line in (all_calls_line(prompt), monthly_cost_line(prompt)):
        parts.append(f"<p>{html.escape(line)}</p>" if line else "")
    parts.append(_html_list(prompt.notes))
    parts.append(_html_figures(prompt, confidence, base, candidate))
    return "<section>" + "".join(parts) + "</section>"


def _html_list(items: Sequence[str]) -> str:
    if not items:
        return ""
    return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"


def _plain(markdown: str) -> str:
    return markdown.replace("**", "").replace("`", "")


def render_html(comparison: Comparison, base: RunFile, candidate: RunFile) -> str:
    """A self-contained HTML page: summary, tables and inline charts (no network needed)."""
    header = [
        f'<h1 class="{comparison.verdict}">{html.escape(_plain(summary_line(comparison)))}</h1>',
        f"<p>{html.escape(_plain(_describe_run('Base', comparison.base_run)))}<br>",
        f"{html.escape(_plain(_describe_run('Candidate', comparison.candidate_run)))}</p>",
        f"<p>{html.escape(method_line(comparison))}</p>",
        _html_list(general_notes(comparison)),
    ]
    sections = [
        _html_prompt(prompt, comparison.confidence, base, candidate)
        for prompt in comparison.prompts
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>promptprof comparison</title>"
        f"<style>{HTML_STYLE}</style></head><body>"
        + "".join(header + sections)
        + "</body></html>\n"
    )
