"""The alert engine: closed windows in, alert events out; per series, with checkpointable state.

A *series* here is (service, prompt id, version, model, label values, window width). For each
series the engine keeps a robust baseline per anomaly metric (:mod:`.baseline`) and a small
state machine per rule:

- A window is judged by a rule only when the figure has at least ``min_calls`` calls behind it
  (and, for anomalies, the baseline has seen ``warmup_windows`` windows); other windows leave
  the rule as it is. Every judged window is then learned by the baselines.
- An anomaly window is *bad* when the figure is beyond ``threshold`` robust standard
  deviations of the baseline and beyond ``min_relative_change`` of the baseline and
  ``min_absolute_change`` (in the configured direction). A window with fewer calls than the
  series' usual (the median calls of its recent windows) is noisier: its spread is widened by
  sqrt(usual / calls). Rates (the error rate) use at least the binomial standard deviation of
  the window's call count (at the mean rate of the history) as spread. An SLO window is bad
  when it crosses its fixed limit.
- ``fire_after`` bad windows in a row fire the alert; ``resolve_after`` good windows in a row
  resolve it. While it fires, a reminder is emitted when a bad window ends ``repeat_interval_s``
  (event time) after the last notification.

A new prompt version starts with a copy of the baselines of the version of the same prompt,
model, labels and width seen last (on any partition this engine holds), so a change the new
version brought is judged against the old version's figures; alerts then name both versions.
Across workers, a version whose predecessor lives on another worker's partition warms up alone.

Windows that end no later than the last judged window of their series are ignored, so a
re-delivered window (at-least-once input) is not counted twice. State is kept per partition of
the calls topic, like the window state, and travels as bytes (:meth:`AlertEngine.state_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import orjson
import structlog

from promptprof_processor.alerts.baseline import Baseline, Method, make_baseline
from promptprof_processor.alerts.events import (
    Alert,
    AlertWindow,
    Kind,
    State,
    alert_id,
    fingerprint,
)
from promptprof_processor.alerts.metrics import METRICS, Metric
from promptprof_processor.alerts.rules import (
    AlertRules,
    AnomalyRules,
    Direction,
    RuleSet,
    Severity,
    load_rules,
)
from promptprof_processor.alerts.settings import AlertSettings
from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import SeriesTags, WindowAggregate

log = structlog.get_logger("promptprof.alerts")

STATE_FORMAT = 1
VOLUME = "calls"  # the baseline of the calls per window, kept beside the metrics' baselines
DEFAULT_STATE_TTL_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's judgement of one window."""

    bad: bool
    observed: float
    baseline: float | None
    threshold: float
    score: float | None
    direction: Literal["above", "below"]


@dataclass(frozen=True, slots=True)
class SloCheck:
    """A fixed limit on a figure."""

    rule: str
    metric: Metric
    min_calls: float
    limit: float
    above: bool
    severity: Severity
    kind: Kind = "slo"

    def judge(self, value: float, baseline: float | None) -> Verdict:
        """Bad when ``value`` crosses the limit."""
        bad = value > self.limit if self.above else value < self.limit
        side: Literal["above", "below"] = "above" if self.above else "below"
        return Verdict(bad, value, baseline, self.limit, None, side)


@dataclass(frozen=True, slots=True)
class AnomalyCheck:
    """A deviation test against the series' baseline of a figure."""

    rule: str
    metric: Metric
    min_calls: float
    threshold: float
    direction: Direction
    min_relative_change: float
    min_absolute_change: float
    severity: Severity
    kind: Kind = "anomaly"

    def judge(self, value: float, calls: float, baseline: Baseline, volume: float) -> Verdict:
        """Bad when ``value`` is far enough from the baseline in the watched direction;
        ``volume`` (>= 1) widens the spread of a window with fewer calls than usual."""
        center, scale = baseline.spread()
        scale *= volume
        deviation = value - center
        above = self.direction == "up" or (self.direction == "both" and deviation >= 0)
        if self.metric.rate:
            scale = max(scale, _binomial_sd(max(center, baseline.mean()), calls))
        tolerance = max(
            self.threshold * scale,
            self.min_relative_change * abs(center),
            self.min_absolute_change,
        )
        bad = (deviation if above else -deviation) > tolerance
        limit = center + tolerance if above else center - tolerance
        score = deviation / scale if scale > 0 else None
        return Verdict(bad, value, center, limit, score, "above" if above else "below")


Check = SloCheck | AnomalyCheck


def _volume_factor(state: SeriesState, window: WindowAggregate) -> float:
    """sqrt(usual calls / this window's calls) when the window has fewer calls than usual."""
    usual = state.baselines.get(VOLUME)
    if usual is None or usual.count == 0 or window.calls <= 0:
        return 1.0
    typical = usual.spread()[0]
    return math.sqrt(typical / window.calls) if window.calls < typical else 1.0


def _binomial_sd(rate: float, calls: float) -> float:
    """The standard deviation of a proportion near ``rate`` over ``calls`` calls."""
    if calls <= 0:
        return 0.0
    p = min(max(rate, 1.0 / calls), 0.5)
    return math.sqrt(p * (1 - p) / calls)


@dataclass(frozen=True)
class CompiledRules:
    """A rule set turned into checks."""

    rules: RuleSet
    checks: tuple[Check, ...]
    learned: tuple[AnomalyCheck, ...]

    @classmethod
    def of(cls, rules: RuleSet) -> CompiledRules:
        """The checks of ``rules``: SLOs first, then anomalies."""
        slo = [
            SloCheck(
                f"slo.{name}", METRICS[name], _given(limit.min_calls, rules.min_calls),
                *limit.bound(), limit.severity,
            )
            for name, limit in rules.slo.items()
        ]
        anomaly = _anomaly_checks(rules) if rules.anomaly.enabled else []
        return cls(rules, (*slo, *anomaly), tuple(anomaly))

    def judges(self, width_s: int) -> bool:
        """Whether windows of ``width_s`` are judged."""
        return not self.rules.widths_s or width_s in self.rules.widths_s


def _anomaly_checks(rules: RuleSet) -> list[AnomalyCheck]:
    section = rules.anomaly
    checks: list[AnomalyCheck] = []
    for name, spec in section.metrics.items():
        if not spec.enabled:
            continue
        checks.append(
            AnomalyCheck(
                f"anomaly.{name}", METRICS[name], _given(spec.min_calls, rules.min_calls),
                _given(spec.threshold, section.threshold),
                spec.direction or section.direction,
                _given(spec.min_relative_change, section.min_relative_change),
                _given(spec.min_absolute_change, section.min_absolute_change),
                spec.severity or section.severity,
            )
        )
    return checks


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass(slots=True)
class RuleState:
    """The hysteresis state of one rule on one series."""

    firing: bool = False
    bad: int = 0
    good: int = 0
    started_ns: int = 0
    notified_ns: int = 0

    def to_state(self) -> list[Any]:
        """JSON-native state."""
        return [self.firing, self.bad, self.good, self.started_ns, self.notified_ns]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> RuleState:
        """Restore from :meth:`to_state` output."""
        firing, bad, good, started_ns, notified_ns = state
        return cls(bool(firing), int(bad), int(good), int(started_ns), int(notified_ns))


@dataclass(slots=True)
class SeriesState:
    """Baselines and rule states of one series."""

    prompt_id: str
    family: str
    version: str
    method: Method
    baselines: dict[str, Baseline] = field(default_factory=dict)
    rules: dict[str, RuleState] = field(default_factory=dict)
    own_windows: int = 0
    seeded_from: str | None = None
    last_end_ns: int = 0

    def to_state(self) -> dict[str, Any]:
        """JSON-native state."""
        return {
            "prompt_id": self.prompt_id,
            "family": self.family,
            "version": self.version,
            "method": self.method,
            "baselines": {name: b.to_state() for name, b in self.baselines.items()},
            "rules": {rule: r.to_state() for rule, r in self.rules.items()},
            "own_windows": self.own_windows,
            "seeded_from": self.seeded_from,
            "last_end_ns": self.last_end_ns,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], anomaly: AnomalyRules) -> SeriesState:
        """Restore from :meth:`to_state` output; baselines of another method are dropped."""
        same = state["method"] == anomaly.method
        size = anomaly.baseline_windows
        return cls(
            prompt_id=state["prompt_id"],
            family=state["family"],
            version=state["version"],
            method=anomaly.method,
            baselines={
                name: make_baseline(anomaly.method, size, b)
                for name, b in (state["baselines"].items() if same else ())
            },
            rules={rule: RuleState.from_state(r) for rule, r in state["rules"].items()},
            own_windows=state["own_windows"],
            seeded_from=state["seeded_from"],
            last_end_ns=state["last_end_ns"],
        )


def series_keys(series: SeriesTags, width_s: int) -> tuple[str, str]:
    """(series key, family key): the family leaves the prompt version out."""
    labels = "\x1e".join(f"{k}={v}" for k, v in sorted(series.labels.items()))
    family = "\x1f".join((series.service, series.prompt_id, series.model, labels, str(width_s)))
    return f"{family}\x1f{series.prompt_version}", family


def _baseline(state: SeriesState, name: str, anomaly: AnomalyRules) -> Baseline:
    baseline = state.baselines.get(name)
    if baseline is None:
        baseline = state.baselines[name] = make_baseline(anomaly.method, anomaly.baseline_windows)
    return baseline


class AlertEngine:
    """Judges closed windows against the rules; pure, synchronous, per-partition state."""

    def __init__(
        self, rules: AlertRules | None = None, *, repeat_interval_s: float = 3600.0,
        state_ttl_s: float = DEFAULT_STATE_TTL_S,
    ) -> None:
        """An engine with no state; ``rules`` default to the built-in rules."""
        self.rules = rules or AlertRules()
        self.repeat_interval_ns = round(repeat_interval_s * NS_PER_S)
        self.state_ttl_ns = round(state_ttl_s * NS_PER_S)
        self._partitions: dict[int, dict[str, SeriesState]] = {}
        self._families: dict[str, dict[str, SeriesState]] = {}  # family -> series key -> state
        self._compiled = lru_cache(maxsize=4096)(self._compile)

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> AlertEngine:
        """An engine with the rules file and repeat interval of the ``alerts`` settings."""
        return cls(load_rules(settings.rules_file), repeat_interval_s=settings.repeat_interval_s)

    def _compile(self, prompt_id: str) -> CompiledRules:
        return CompiledRules.of(self.rules.for_prompt(prompt_id))

    def owns(self, partition: int) -> bool:
        """Whether state for ``partition`` is loaded."""
        return partition in self._partitions

    def observe(self, windows: Iterable[WindowAggregate], partition: int = 0) -> list[Alert]:
        """Judge closed windows of ``partition`` (in event-time order per series)."""
        states = self._partitions.setdefault(partition, {})
        alerts: list[Alert] = []
        for window in windows:
            compiled = self._compiled(window.series.prompt_id)
            if compiled.judges(window.width_s):
                alerts.extend(self._observe_one(states, compiled, window))
        return alerts

    def _observe_one(
        self, states: dict[str, SeriesState], compiled: CompiledRules, window: WindowAggregate
    ) -> list[Alert]:
        key, family = series_keys(window.series, window.width_s)
        state = states.get(key)
        if state is None:
            state = states[key] = self._new_series(family, window.series, compiled)
            self._families.setdefault(family, {})[key] = state
        elif window.window_end_ns <= state.last_end_ns:
            return []
        state.last_end_ns = window.window_end_ns
        volume = _volume_factor(state, window)
        alerts = [
            alert for check in compiled.checks
            if (alert := self._check(state, compiled.rules, check, window, volume)) is not None
        ]
        self._learn(state, compiled, window)
        return alerts

    def _check(
        self, state: SeriesState, rules: RuleSet, check: Check, window: WindowAggregate,
        volume: float,
    ) -> Alert | None:
        verdict = self._judge(state, rules, check, window, volume)
        if verdict is None:
            return None
        rule_state = state.rules.get(check.rule)
        if rule_state is None:
            rule_state = state.rules[check.rule] = RuleState()
        transition = self._step(rule_state, rules, verdict.bad, window)
        if transition is None:
            return None
        return self._alert(state, rules, check, verdict, window, rule_state, transition)

    @staticmethod
    def _judge(
        state: SeriesState, rules: RuleSet, check: Check, window: WindowAggregate, volume: float
    ) -> Verdict | None:
        metric = check.metric
        value = metric.value(window)
        calls = metric.count(window)
        if value is None or calls < check.min_calls or calls <= 0:
            return None
        baseline = state.baselines.get(metric.name)
        if baseline is not None and baseline.count < rules.anomaly.warmup_windows:
            baseline = None
        if isinstance(check, SloCheck):
            return check.judge(value, None if baseline is None else baseline.spread()[0])
        return None if baseline is None else check.judge(value, calls, baseline, volume)

    def _step(
        self, rule: RuleState, rules: RuleSet, bad: bool, window: WindowAggregate
    ) -> tuple[State, bool] | None:
        """Advance the hysteresis; return (state, repeat) when an event is due."""
        if rule.firing:
            return self._step_firing(rule, rules, bad, window.window_end_ns)
        if not bad:
            rule.bad = 0
            return None
        rule.bad += 1
        if rule.bad == 1:
            rule.started_ns = window.window_start_ns
        if rule.bad < rules.hysteresis.fire_after:
            return None
        rule.firing, rule.good, rule.notified_ns = True, 0, window.window_end_ns
        return "firing", False

    def _step_firing(
        self, rule: RuleState, rules: RuleSet, bad: bool, end_ns: int
    ) -> tuple[State, bool] | None:
        if bad:
            rule.good = 0
            if end_ns - rule.notified_ns < self.repeat_interval_ns:
                return None
            rule.notified_ns = end_ns
            return "firing", True
        rule.good += 1
        if rule.good < rules.hysteresis.resolve_after:
            return None
        rule.firing, rule.bad = False, 0
        return "resolved", False

    def _alert(
        self, state: SeriesState, rules: RuleSet, check: Check, verdict: Verdict,
        window: WindowAggregate, rule: RuleState, transition: tuple[State, bool],
    ) -> Alert:
        alert_state, repeat = transition
        baseline_version = self._baseline_version(state, rules)
        fp = fingerprint(window.series, window.width_s, check.rule)
        return Alert(
            alert_id=alert_id(fp, alert_state, rule.started_ns, window.window_end_ns),
            fingerprint=fp,
            state=alert_state,
            repeat=repeat,
            kind=check.kind,
            rule=check.rule,
            metric=check.metric.name,
            severity=check.severity,
            series=window.series,
            window=AlertWindow(
                start_ns=window.window_start_ns, end_ns=window.window_end_ns,
                width_s=window.width_s,
            ),
            started_ns=rule.started_ns,
            observed=verdict.observed,
            baseline=verdict.baseline,
            threshold=verdict.threshold,
            score=verdict.score,
            direction=verdict.direction,
            baseline_version=baseline_version,
            previous_version=state.seeded_from,
            message=describe(check, verdict, window, alert_state, baseline_version),
        )

    @staticmethod
    def _baseline_version(state: SeriesState, rules: RuleSet) -> str:
        """The version the baseline mostly comes from."""
        inherited = state.own_windows * 2 < rules.anomaly.baseline_windows
        return state.seeded_from if state.seeded_from and inherited else state.version

    @staticmethod
    def _learn(state: SeriesState, compiled: CompiledRules, window: WindowAggregate) -> None:
        anomaly = compiled.rules.anomaly
        learned = False
        for check in compiled.learned:
            metric = check.metric
            value = metric.value(window)
            if value is None or metric.count(window) < check.min_calls:
                continue
            _baseline(state, metric.name, anomaly).add(value)
            learned = True
        if learned:
            _baseline(state, VOLUME, anomaly).add(window.calls)
            state.own_windows += 1

    def _new_series(
        self, family: str, series: SeriesTags, compiled: CompiledRules
    ) -> SeriesState:
        """A fresh series, its baselines copied from the family's latest other version."""
        anomaly = compiled.rules.anomaly
        version = series.prompt_version
        state = SeriesState(series.prompt_id, family, version, anomaly.method)
        previous = self._latest_in_family(family, version)
        if previous is not None and previous.method == anomaly.method:
            state.baselines = {
                name: make_baseline(anomaly.method, anomaly.baseline_windows, b.to_state())
                for name, b in previous.baselines.items()
            }
            state.seeded_from = previous.version
            log.info(
                "promptprof.alert_baseline_seeded", service=series.service,
                prompt_id=series.prompt_id, model=series.model, version=version,
                from_version=previous.version,
            )
        return state

    def _latest_in_family(self, family: str, version: str) -> SeriesState | None:
        members = self._families.get(family, {}).values()
        candidates = [s for s in members if s.version != version and s.baselines]
        return max(candidates, key=lambda s: s.last_end_ns, default=None)

    def state_bytes(self, partition: int = 0) -> bytes:
        """The partition's state as bytes (series idle beyond the TTL are dropped first)."""
        states = self._partitions.get(partition, {})
        self._expire(states)
        series = {key: s.to_state() for key, s in states.items()}
        return orjson.dumps({"format": STATE_FORMAT, "series": series})

    def _expire(self, states: dict[str, SeriesState]) -> None:
        if not states:
            return
        newest = max(s.last_end_ns for s in states.values())
        stale = {k: s for k, s in states.items() if newest - s.last_end_ns > self.state_ttl_ns}
        self._unindex(stale)
        for key in stale:
            del states[key]

    def _unindex(self, states: dict[str, SeriesState]) -> None:
        for key, state in states.items():
            members = self._families.get(state.family, {})
            members.pop(key, None)
            if not members:
                self._families.pop(state.family, None)

    def restore(self, partition: int, data: bytes | None) -> None:
        """Load a partition's state from :meth:`state_bytes` output (or start it empty)."""
        self.forget(partition)
        states = self._partitions[partition] = self._decode(data) if data else {}
        for key, state in states.items():
            self._families.setdefault(state.family, {})[key] = state

    def _decode(self, data: bytes) -> dict[str, SeriesState]:
        try:
            document = orjson.loads(data)
            if document.get("format") != STATE_FORMAT:
                raise ValueError(f"state format {document.get('format')!r}")
            return {
                key: SeriesState.from_state(s, self._compiled(s["prompt_id"]).rules.anomaly)
                for key, s in document["series"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("promptprof.alert_state_discarded", reason=str(exc))
            return {}

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's state (its checkpoint stays wherever it was saved)."""
        self._unindex(self._partitions.pop(partition, {}))

    def series_count(self) -> int:
        """Series with state, over every partition."""
        return sum(len(states) for states in self._partitions.values())


def describe(
    check: Check, verdict: Verdict, window: WindowAggregate, state: State, baseline_version: str
) -> str:
    """The one-line message of an alert event."""
    s = window.series
    fmt = check.metric.format
    where = f"{s.prompt_id} {s.prompt_version} on {s.model} ({s.service}, {window.width_s}s)"
    label = check.metric.label
    if state == "resolved":
        return (
            f"resolved: {where}: {label} {fmt(verdict.observed)} is back within "
            f"{fmt(verdict.threshold)}"
        )
    if isinstance(check, SloCheck):
        bound = "max" if check.above else "min"
        return (
            f"{where}: {label} {fmt(verdict.observed)} breaks its SLO "
            f"({bound} {fmt(check.limit)})"
        )
    text = (
        f"{where}: {label} {fmt(verdict.observed)} is {verdict.direction} its baseline "
        f"{fmt(verdict.baseline)} (limit {fmt(verdict.threshold)})"
    )
    if baseline_version != s.prompt_version:
        text += f"; baseline from version {baseline_version}: version {s.prompt_version} changed it"
    return text
