"""Alert rules: SLO thresholds and anomaly detection, per prompt over defaults, from YAML.

A rules file holds two sections. ``defaults`` applies to every prompt; ``prompts`` maps a
prompt id to overrides, merged key by key over the defaults (a ``null`` removes an SLO or
disables an anomaly metric). Every key is checked: a misspelt one is an error, not ignored.

.. code-block:: yaml

    defaults:
      min_calls: 20              # a window with fewer observed events (for that figure) is
                                 # not judged (sampled events count once, not 1/sample_rate)
      widths_s: []               # window widths to judge; empty: every width
      page_widths_s: []          # widths whose firing notifies; empty: every judged width
      hysteresis: {fire_after: 2, resolve_after: 3, resolve_within: 0.5}
      slo:                       # fixed limits; each fires on its own
        latency_p95_ms: {max: 2000, severity: critical}
        error_rate: {max: 0.05}
        cost_per_call_usd: {max: 0.02}
        quality_mean: {min: 0.6, severity: warning}
      anomaly:                   # deviation from the series' own recent windows
        method: mad              # mad: median and MAD of the last windows; ewma: robust EWMA
        baseline_windows: 30     # windows the baseline remembers
        warmup_windows: 10       # windows before a baseline is used
        threshold: 5             # robust standard deviations
        min_relative_change: 0.1 # and at least this fraction of the baseline
        direction: up            # up, down or both
        accept_after_s: null     # a shift firing this long becomes the new baseline (off)
        metrics:                 # merged over the default set below
          latency_p99_ms: {threshold: 6}
          cost_per_call_usd: null
      error_budget:              # SLOs judged by multi-window, multi-burn-rate rules
        success: {objective: 0.995}                  # 99.5 % of calls succeed
        latency: {objective: 0.99, threshold_ms: 4000}  # 99 % finish under 4 s
        burn_windows:            # the default pair (Google SRE workbook)
          - {long_s: 3600, short_s: 300, burn_rate: 14.4, severity: critical}
          - {long_s: 21600, short_s: 1800, burn_rate: 6, severity: warning}
      spend: {budget_usd: 200, period: day}   # projected spend at the current rate
    prompts:
      support-answer:
        slo: {latency_p95_ms: {max: 1500}}
        anomaly: {threshold: 6}

Default anomaly metrics: latency p95 (judged from 40 calls) and p99 (threshold 6, from 100
calls: a tail percentile of fewer calls is one of the few slowest calls), TTFT p95 (from 40
calls), error rate (at least 2 points of change), tokens per call (either direction) and cost
per call. ``min_calls`` may also be set per SLO
and per anomaly metric.

``error_budget`` and ``spend`` are judged per prompt (service and prompt id, every version,
model and label together) from the windows of one width (``width_s``; default the smallest width
the prompt is seen with), whichever widths ``widths_s`` judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptprof_processor.alerts.metrics import MetricName

Severity = Literal["info", "warning", "critical"]
Direction = Literal["up", "down", "both"]

DEFAULT_ANOMALY_METRICS: dict[str, dict[str, Any]] = {
    "latency_p95_ms": {"min_calls": 40},
    "latency_p99_ms": {"threshold": 6.0, "min_calls": 100},
    "ttft_p95_ms": {"min_calls": 40},
    "error_rate": {"min_absolute_change": 0.02},
    "tokens_per_call": {"direction": "both"},
    "cost_per_call_usd": {},
}


class RulesError(ValueError):
    """An invalid rules file: the message names the file, each bad key and what is expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hysteresis(_Strict):
    """How many bad windows in a row fire an alert and how many windows resolve it: an SLO's
    good windows in a row; an anomaly's windows pooled (their level back within the band)."""

    fire_after: int = Field(default=2, ge=1, le=100, description="bad windows in a row, 1..100")
    resolve_after: int = Field(
        default=3, ge=1, le=100,
        description="windows that resolve, 1..100: SLOs good in a row, anomalies pooled",
    )
    resolve_within: float = Field(
        default=0.5, gt=0, le=1,
        description="a firing anomaly resolves within this share of the way to its level",
    )


class SloLimit(_Strict):
    """A fixed limit on one figure: ``max`` (fires above) or ``min`` (fires below)."""

    max: float | None = Field(default=None, description="fires when the figure is above it")
    min: float | None = Field(default=None, description="fires when the figure is below it")
    severity: Severity = "critical"
    min_calls: float | None = Field(default=None, ge=0, description="overrides the rule set's")

    @model_validator(mode="after")
    def _one_bound(self) -> SloLimit:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max or min")
        return self

    def bound(self) -> tuple[float, bool]:
        """(the limit, whether it is a maximum)."""
        if self.max is not None:
            return self.max, True
        assert self.min is not None  # the validator guarantees one bound
        return self.min, False


class AnomalyMetric(_Strict):
    """Per-metric overrides of the anomaly settings (unset: the section's value)."""

    enabled: bool = True
    threshold: float | None = Field(default=None, gt=0, description="robust standard deviations")
    direction: Direction | None = None
    min_relative_change: float | None = Field(default=None, ge=0)
    min_absolute_change: float | None = Field(default=None, ge=0)
    severity: Severity | None = None
    min_calls: float | None = Field(default=None, ge=0, description="overrides the rule set's")


class AnomalyRules(_Strict):
    """Anomaly detection against the series' own recent windows."""

    enabled: bool = True
    method: Literal["mad", "ewma"] = Field(
        default="mad", description="'mad' (median/MAD of a rolling history) or 'ewma'"
    )
    baseline_windows: int = Field(default=30, ge=5, le=1000, description="5..1000 windows")
    warmup_windows: int = Field(default=10, ge=3, le=1000, description="3..1000 windows")
    threshold: float = Field(default=5.0, gt=0, description="robust standard deviations, > 0")
    direction: Direction = "up"
    min_relative_change: float = Field(default=0.1, ge=0, description="fraction of the baseline")
    min_absolute_change: float = Field(default=0.0, ge=0)
    severity: Severity = "warning"
    accept_after_s: float | None = Field(
        default=None, gt=0,
        description="seconds of firing after which a shift becomes the new baseline; none: never",
    )
    metrics: dict[MetricName, AnomalyMetric] = Field(default_factory=lambda: _default_metrics())

    @field_validator("metrics", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        return _metrics_over_defaults(value) if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _warmup_fits(self) -> AnomalyRules:
        if self.warmup_windows > self.baseline_windows:
            raise ValueError("warmup_windows must not exceed baseline_windows")
        return self


def _default_metrics() -> dict[MetricName, AnomalyMetric]:
    return {
        cast(MetricName, name): AnomalyMetric(**spec)
        for name, spec in DEFAULT_ANOMALY_METRICS.items()
    }


def _metrics_over_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """The default metric set with ``given`` merged over it; ``null`` disables a metric."""
    merged: dict[str, Any] = {name: dict(spec) for name, spec in DEFAULT_ANOMALY_METRICS.items()}
    for name, spec in given.items():
        if spec is None:
            merged[name] = {"enabled": False}
        elif isinstance(spec, Mapping) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **spec}
        else:
            merged[name] = spec
    return merged


class Objective(_Strict):
    """An SLO over calls: the share of calls that must be good."""

    objective: float = Field(gt=0, lt=1, description="share of good calls, e.g. 0.995")
    threshold_ms: float | None = Field(
        default=None, gt=0, description="latency SLOs: a call slower than this (ms) is bad"
    )


class BurnWindow(_Strict):
    """A multi-window burn-rate rule: fires when the budget burns at least ``burn_rate`` times
    the sustainable rate over both the long and the short window."""

    long_s: int = Field(gt=0, le=30 * 86_400)
    short_s: int = Field(gt=0)
    burn_rate: float = Field(gt=0)
    severity: Severity = "critical"

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnWindow:
        if self.short_s >= self.long_s:
            raise ValueError("short_s must be below long_s")
        return self


DEFAULT_BURN_WINDOWS = (
    BurnWindow(long_s=3600, short_s=300, burn_rate=14.4, severity="critical"),
    BurnWindow(long_s=21_600, short_s=1800, burn_rate=6.0, severity="warning"),
)


class ErrorBudget(_Strict):
    """Success and latency SLOs of a prompt, judged on their error budget's burn rate."""

    success: Objective | None = None
    latency: Objective | None = None
    burn_windows: list[BurnWindow] = Field(
        default=list(DEFAULT_BURN_WINDOWS), min_length=1, max_length=4
    )
    width_s: int | None = Field(default=None, description="window width counted; none: smallest")

    @model_validator(mode="after")
    def _latency_has_threshold(self) -> ErrorBudget:
        if self.latency is not None and self.latency.threshold_ms is None:
            raise ValueError("the latency objective needs threshold_ms")
        return self


class Spend(_Strict):
    """A spend budget in USD per UTC day or calendar month, judged on the projected spend."""

    budget_usd: float = Field(gt=0)
    period: Literal["day", "month"] = "day"
    rate_window_s: int = Field(
        default=3600, ge=300, le=86_400, description="the spend rate is measured over this"
    )
    severity: Severity = "warning"
    width_s: int | None = Field(default=None, description="window width counted; none: smallest")


class RuleSet(_Strict):
    """The rules of one prompt (or the defaults)."""

    min_calls: float = Field(
        default=20, ge=0, description="calls behind a figure before its window is judged"
    )
    widths_s: list[int] = Field(default=[], description="window widths to judge; [] = all")
    page_widths_s: list[int] = Field(
        default=[], description="widths whose firing notifies; [] = every judged width"
    )
    hysteresis: Hysteresis = Hysteresis()
    slo: dict[MetricName, SloLimit] = {}
    anomaly: AnomalyRules = AnomalyRules()
    error_budget: ErrorBudget | None = None
    spend: Spend | None = None

    @field_validator("slo", mode="before")
    @classmethod
    def _drop_removed(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: v for k, v in value.items() if v is not None}
        return value


class AlertRules(_Strict):
    """Default rules and per-prompt rules (already merged over the defaults)."""

    defaults: RuleSet = RuleSet()
    prompts: dict[str, RuleSet] = {}

    def for_prompt(self, prompt_id: str) -> RuleSet:
        """The rules that apply to ``prompt_id``."""
        return self.prompts.get(prompt_id, self.defaults)

    def latency_thresholds_ms(self) -> list[float]:
        """Every latency-SLO threshold of the rules, once each, ascending: the windows count
        their calls over each exactly."""
        found = {
            budget.latency.threshold_ms
            for rules in (self.defaults, *self.prompts.values())
            if (budget := rules.error_budget) is not None and budget.latency is not None
            and budget.latency.threshold_ms is not None
        }
        return sorted(found)


def parse_rules(document: Mapping[str, Any] | None, source: str = "<rules>") -> AlertRules:
    """Rules from a parsed YAML document; raises :class:`RulesError` naming every bad key."""
    document = document or {}
    if not isinstance(document, Mapping):
        raise RulesError(f"alert rules {source} must hold a mapping at the top level")
    unknown = sorted(str(key) for key in set(document) - {"defaults", "prompts"})
    problems = [f"  {key}: unknown section (expected 'defaults' or 'prompts')" for key in unknown]
    raw_defaults = _mapping(document.get("defaults"), "defaults", problems)
    defaults = _rule_set(raw_defaults, "defaults", problems)
    prompts: dict[str, RuleSet] = {}
    raw_prompts = _mapping(document.get("prompts"), "prompts", problems)
    for prompt_id, raw in raw_prompts.items() if defaults is not None else ():
        where = f"prompts.{prompt_id}"
        merged = _deep_merge(raw_defaults, _mapping(raw, where, problems))
        rule_set = _rule_set(merged, where, problems)
        if rule_set is not None:
            prompts[str(prompt_id)] = rule_set
    if problems or defaults is None:
        raise RulesError("\n".join([f"invalid alert rules in {source}:", *problems]))
    return AlertRules(defaults=defaults, prompts=prompts)


def load_rules(path: str | Path | None) -> AlertRules:
    """Rules from a YAML file (``None``: the built-in defaults)."""
    if path is None:
        return AlertRules()
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"cannot read alert rules file {path}: {exc}") from None
    return parse_rules(document, str(path))


def _mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"  {where}: expected a mapping, got {type(value).__name__}")
        return {}
    return dict(value)


def _rule_set(raw: dict[str, Any], where: str, problems: list[str]) -> RuleSet | None:
    try:
        return RuleSet.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            path = ".".join([where, *(str(p) for p in error["loc"])])
            got = error.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            problems.append(f"  {path}: {error['msg']}{shown}{_hint(error['loc'])}")
        return None


def _hint(loc: tuple[int | str, ...]) -> str:
    """The field's description, where it has one."""
    model: Any = RuleSet
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            break
        info = fields[part]
        model = info.annotation
    described = info.description if info is not None else None
    return f"; expected {described}" if described else ""


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, mappings merged key by key (an explicit ``None`` is kept)."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged
