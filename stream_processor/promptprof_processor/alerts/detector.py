"""The alert engine: closed windows in, alert events out; per series, with checkpointable state.

A *series* here is (service, prompt id, version, model, label values, window width). For each
series the engine keeps a robust baseline per anomaly metric (:mod:`.baseline`) and a small
state machine per rule:

- A window is judged by a rule only when the figure rests on at least ``min_calls`` *observed
  events* (sampled events count once: :mod:`.metrics`) and, for anomalies, the baseline has seen
  ``warmup_windows`` windows; other windows leave the rule as it is.
- An anomaly window is *bad* when the figure is beyond ``threshold`` robust standard
  deviations of the baseline and beyond ``min_relative_change`` of the baseline and
  ``min_absolute_change`` (in the configured direction). A window with fewer events than the
  series' usual (the median events of its recent windows) is noisier: its spread is widened by
  sqrt(usual / events). Rates (the error rate) use at least the binomial standard deviation of
  the window's observed events (at the mean rate of the history) as spread. An SLO window is
  bad when it crosses its fixed limit.
- A baseline learns a window only while its rule is quiet: a bad window, and every window while
  the rule fires, leaves the baseline as it was before the incident. So a sustained regression
  stays firing, and ``resolved`` means the figure is back within the band of the baseline from
  before the incident over the last ``resolve_after`` windows: their pooled level (geometric
  mean for latency, tokens and cost, else mean: :class:`Recovery`), since one window's tail
  percentile rests on a few calls. The band is the firing tolerance, narrowed to
  ``resolve_within`` of the way from the baseline to the incident's level (the median of the
  incident's windows; on a log scale for latency, tokens and cost) when that is closer: a
  regression that only just crosses the firing limit must come clearly back, not hover under
  the limit, to resolve. A lasting shift becomes the new normal only by the rule's
  ``accept_after_s`` (off by default): after firing that long, the baseline is rebuilt from the
  windows of the incident and an ``accepted`` event is sent (never ``resolved``). A new prompt
  version starts from a copy of the previous version's baselines (below), so a version bump
  does not accept a shift either.
- ``fire_after`` bad windows in a row fire a rule on a width; an SLO resolves after
  ``resolve_after`` good windows in a row, an anomaly on its pooled level (above). The widths
  of one series are one *incident* per rule: the first paging width (``page_widths_s``) that
  fires notifies, the others join it silently, and the incident resolves (one event) when the
  last width firing resolves. While it fires, a reminder is emitted when a bad window of a
  paging width ends ``repeat_interval_s`` (event time) after the last notification.
- Error budgets (burn rates) and spend are judged per prompt (:mod:`.budgets`).

A new prompt version starts with a copy of the baselines of the version of the same prompt,
model, labels and width seen last (on any partition this engine holds), so a change the new
version brought is judged against the old version's figures; alerts then name both versions.
Across workers, a version whose predecessor lives on another worker's partition warms up alone.

Windows that end no later than the last judged window of their series are ignored, so a
re-delivered window (at-least-once input) is not counted twice. The engine reads no clock: time
comes from the windows, so the same windows give the same events and the same state.

State is kept per partition of the calls topic, like the window state, as small entries
(:mod:`.state`): :meth:`AlertEngine.changed_states` returns the entries changed since its last
call and :meth:`AlertEngine.restore_states` rebuilds a partition from all of them; the older
:meth:`AlertEngine.state_bytes` / :meth:`AlertEngine.restore` move every entry as one blob.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from statistics import median
from typing import Literal

import orjson
import structlog

from promptprof_processor.alerts.baseline import Baseline, make_baseline
from promptprof_processor.alerts.budgets import Budgets
from promptprof_processor.alerts.events import (
    Alert,
    AlertWindow,
    Kind,
    State,
    alert_id,
    fingerprint,
    series_identity,
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
from promptprof_processor.alerts.state import (
    BURN,
    INCIDENT,
    SERIES,
    SPEND,
    Incident,
    PartitionState,
    Persistent,
    RuleState,
    SeriesState,
    pack_entries,
    unpack_entries,
)
from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import SeriesTags, WindowAggregate

log = structlog.get_logger("promptprof.alerts")

VOLUME = "calls"  # the baseline of the observed events per window, beside the metrics'
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
    recovered: int  # windows in a row this verdict finds back within the band (0: not back)
    resolve_limit: float
    level: float  # the figure the recovery was judged on (pooled over windows, for anomalies)


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
        return Verdict(
            bad, value, baseline, self.limit, None, side, 0 if bad else 1, self.limit, value
        )


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

    def judge(
        self, value: float, events: float, baseline: Baseline, volume: float,
        recovery: Recovery | None = None,
    ) -> Verdict:
        """Bad when ``value`` is far enough from the baseline in the watched direction.
        ``events`` is the observed events behind ``value``; ``volume`` (>= 1) widens the spread
        of a window with fewer events than usual. While the rule fires, ``recovery`` says how
        the way back is judged (see :class:`Recovery`)."""
        center, scale = baseline.spread()
        scale *= volume
        deviation = value - center
        above = self.direction == "up" or (self.direction == "both" and deviation >= 0)
        if self.metric.rate:
            scale = max(scale, _binomial_sd(max(center, baseline.mean()), events))
        tolerance = max(
            self.threshold * scale,
            self.min_relative_change * abs(center),
            self.min_absolute_change,
        )
        signed = deviation if above else -deviation
        sign = 1.0 if above else -1.0
        band, level, back = tolerance, value, 0
        if recovery is not None:
            band = recovery.band(center, tolerance, sign, self.metric.multiplicative)
            level = recovery.level(self.metric.multiplicative)
            back = recovery.windows if (level - center) * sign <= band and recovery.full else 0
        score = deviation / scale if scale > 0 else None
        return Verdict(
            signed > tolerance, value, center, center + sign * tolerance, score,
            "above" if above else "below", back, center + sign * band, level,
        )


@dataclass(frozen=True, slots=True)
class Recovery:
    """How a firing anomaly's way back is judged.

    The *level* is the figure pooled over the last ``windows`` judged windows (this one and the
    values held before it): their geometric mean for a multiplicative figure (latency, tokens,
    cost, whose noise scales with the level), else their mean. One window's tail percentile is
    a few calls (p99 of 200 calls is the third slowest), so judging each window alone lets one
    slow call hold a recovered series firing; the pooled level is the most powerful test of
    "back" on those windows, and its error on the incident's side is no larger (it is measured
    in bench/alert_detection.py). The *band* is the firing tolerance, narrowed to
    ``within`` of the way from the baseline to the ``incident`` level (the median of the
    incident's windows) when that is closer; on a log scale for multiplicative figures (the
    point between two levels that their noise reaches as rarely from either side).
    """

    within: float
    incident: float
    recent: tuple[float, ...]  # the last judged values, this window's last
    windows: int  # how many of them make a full pool (the rule's resolve_after)

    @property
    def full(self) -> bool:
        """Whether enough windows were judged since the incident began to pool."""
        return len(self.recent) >= self.windows

    def level(self, multiplicative: bool) -> float:
        """The pooled figure of the recent windows."""
        recent = self.recent[-self.windows:]
        if multiplicative and min(recent) > 0:
            return math.exp(math.fsum(map(math.log, recent)) / len(recent))
        return math.fsum(recent) / len(recent)

    def band(self, center: float, tolerance: float, sign: float, multiplicative: bool) -> float:
        """How far beyond ``center`` (in the alert's direction) the level may be to be back."""
        incident = self.incident
        if (incident - center) * sign <= 0:
            return tolerance
        if multiplicative and center > 0 and incident > 0:
            way = abs(center * math.pow(incident / center, self.within) - center)
        else:
            way = self.within * abs(incident - center)
        return min(tolerance, way)


Check = SloCheck | AnomalyCheck


def _volume_factor(state: SeriesState, window: WindowAggregate) -> float:
    """sqrt(usual events / this window's events) when the window has fewer events than usual."""
    usual = state.baselines.get(VOLUME)
    if usual is None or usual.count == 0 or window.events <= 0:
        return 1.0
    typical = usual.spread()[0]
    return math.sqrt(typical / window.events) if window.events < typical else 1.0


def _binomial_sd(rate: float, events: float) -> float:
    """The standard deviation of a proportion near ``rate`` measured on ``events`` events."""
    if events <= 0:
        return 0.0
    p = min(max(rate, 1.0 / events), 0.5)
    return math.sqrt(p * (1 - p) / events)


@dataclass(frozen=True)
class CompiledRules:
    """A rule set turned into checks."""

    rules: RuleSet
    checks: tuple[Check, ...]
    learned: tuple[AnomalyCheck, ...]
    metrics: tuple[Metric, ...]  # every metric a check reads, once
    accept_ns: int | None

    def readings(self, window: WindowAggregate) -> dict[str, tuple[float | None, float]]:
        """(value, observed events) of every metric the checks read."""
        return {m.name: (m.value(window), m.count(window)) for m in self.metrics}

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
        checks: tuple[Check, ...] = (*slo, *anomaly)
        metrics = tuple({c.metric.name: c.metric for c in checks}.values())
        accept_s = rules.anomaly.accept_after_s
        accept_ns = None if accept_s is None else round(accept_s * NS_PER_S)
        return cls(rules, checks, tuple(anomaly), metrics, accept_ns)

    def judges(self, width_s: int) -> bool:
        """Whether windows of ``width_s`` are judged."""
        return not self.rules.widths_s or width_s in self.rules.widths_s

    def pages(self, width_s: int) -> bool:
        """Whether a firing on windows of ``width_s`` notifies."""
        return not self.rules.page_widths_s or width_s in self.rules.page_widths_s


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


class Step(Enum):
    """What one window did to a rule on one width."""

    FIRE = "fire"  # the rule starts firing
    STILL = "still"  # a bad window while firing
    RESOLVE = "resolve"  # back within the band for resolve_after windows
    ACCEPT = "accept"  # fired for accept_after_s: the shift is the new baseline


def advance(
    rule: RuleState, rules: RuleSet, verdict: Verdict, window: WindowAggregate,
    accept_ns: int | None,
) -> Step | None:
    """Advance a rule's hysteresis by one judged window: a quiet rule counts bad windows, a
    firing one counts windows back within the resolve band."""
    if rule.firing:
        return _advance_firing(rule, rules, verdict, window.window_end_ns, accept_ns)
    bad = verdict.bad
    if not bad:
        rule.bad = 0
        rule.held.clear()
        return None
    rule.bad += 1
    if rule.bad == 1:
        rule.started_ns = window.window_start_ns
    if rule.bad < rules.hysteresis.fire_after:
        return None
    rule.firing, rule.good = True, 0
    return Step.FIRE


def _advance_firing(
    rule: RuleState, rules: RuleSet, verdict: Verdict, end_ns: int, accept_ns: int | None
) -> Step | None:
    """A bad window is STILL (it may remind); a window neither bad nor back only stops the
    count of windows back (a pooled verdict counts all the windows it pooled)."""
    if accept_ns is not None and end_ns - rule.started_ns >= accept_ns:
        rule.firing, rule.bad, rule.good = False, 0, 0
        return Step.ACCEPT
    if not verdict.recovered:
        rule.good = 0
        return Step.STILL if verdict.bad else None
    rule.good = max(rule.good + 1, verdict.recovered)
    if rule.good < rules.hysteresis.resolve_after:
        return None
    rule.firing, rule.bad, rule.good = False, 0, 0
    rule.held.clear()
    return Step.RESOLVE


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


@dataclass(frozen=True, slots=True)
class _Judged:
    """One check's verdict on one window, and what it did to the rule."""

    check: Check
    verdict: Verdict
    rule: RuleState
    step: Step | None


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
        self._partitions: dict[int, PartitionState] = {}
        self._families: dict[str, dict[str, SeriesState]] = {}  # family -> series key -> state
        self._compiled = lru_cache(maxsize=4096)(self._compile)
        self._budgets = Budgets(self.repeat_interval_ns)

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> AlertEngine:
        """An engine with the rules file and repeat interval of the ``alerts`` settings."""
        return cls(load_rules(settings.rules_file), repeat_interval_s=settings.repeat_interval_s)

    def _compile(self, prompt_id: str) -> CompiledRules:
        return CompiledRules.of(self.rules.for_prompt(prompt_id))

    def owns(self, partition: int) -> bool:
        """Whether state for ``partition`` is loaded."""
        return partition in self._partitions

    def _partition(self, partition: int) -> PartitionState:
        found = self._partitions.get(partition)
        if found is None:
            found = self._partitions[partition] = PartitionState()
        return found

    def observe(self, windows: Iterable[WindowAggregate], partition: int = 0) -> list[Alert]:
        """Judge closed windows of ``partition`` (in event-time order per series)."""
        part = self._partition(partition)
        alerts: list[Alert] = []
        for window in windows:
            part.newest_ns = max(part.newest_ns, window.window_end_ns)
            compiled = self._compiled(window.series.prompt_id)
            alerts += self._budgets.observe(part, compiled.rules, window)
            if compiled.judges(window.width_s):
                alerts += self._observe_one(part, compiled, window)
        return alerts

    def _observe_one(
        self, part: PartitionState, compiled: CompiledRules, window: WindowAggregate
    ) -> list[Alert]:
        key, family = series_keys(window.series, window.width_s)
        state = part.series.get(key)
        if state is None:
            state = part.series[key] = self._new_series(family, window.series, compiled)
            self._families.setdefault(family, {})[key] = state
        elif window.window_end_ns <= state.last_ns:
            return []
        state.last_ns = window.window_end_ns
        part.touch_series(key)
        volume = _volume_factor(state, window)
        readings = compiled.readings(window)
        judged = [
            found for check in compiled.checks
            if (found := self._judge(state, compiled, check, readings, window, volume))
            is not None
        ]
        alerts = [
            alert for j in judged
            if (alert := self._notify(part, state, compiled, j, window)) is not None
        ]
        self._learn(state, compiled, readings, window)
        return alerts

    def _judge(
        self, state: SeriesState, compiled: CompiledRules, check: Check,
        readings: dict[str, tuple[float | None, float]], window: WindowAggregate, volume: float,
    ) -> _Judged | None:
        rules = compiled.rules
        rule = state.rules.get(check.rule)
        verdict = self._verdict(state, rules, check, readings, rule, volume)
        if verdict is None:
            return None
        if rule is None:
            rule = state.rules[check.rule] = RuleState()
        accept_ns = compiled.accept_ns if isinstance(check, AnomalyCheck) else None
        step = advance(rule, rules, verdict, window, accept_ns)
        if step is Step.ACCEPT:
            self._accept(state, rules.anomaly, check.metric.name, rule)
        return _Judged(check, verdict, rule, step)

    @staticmethod
    def _verdict(
        state: SeriesState, rules: RuleSet, check: Check,
        readings: dict[str, tuple[float | None, float]], rule: RuleState | None, volume: float,
    ) -> Verdict | None:
        name = check.metric.name
        value, events = readings[name]
        if value is None or events < check.min_calls or events <= 0:
            return None
        baseline = state.baselines.get(name)
        if baseline is not None and baseline.count < rules.anomaly.warmup_windows:
            baseline = None
        if isinstance(check, SloCheck):
            return check.judge(value, None if baseline is None else baseline.spread()[0])
        if baseline is None:
            return None
        recovery = None
        if rule is not None and rule.firing and rule.held:
            hysteresis = rules.hysteresis
            recovery = Recovery(
                hysteresis.resolve_within, median(rule.held), (*rule.held, value),
                hysteresis.resolve_after,
            )
        return check.judge(value, events, baseline, volume, recovery)

    @staticmethod
    def _accept(state: SeriesState, anomaly: AnomalyRules, metric: str, rule: RuleState) -> None:
        """Rebuild a metric's baseline from the windows of the incident (the new normal)."""
        baseline = make_baseline(anomaly.method, anomaly.baseline_windows)
        for value in rule.held:
            baseline.add(value)
        state.baselines[metric] = baseline
        rule.held.clear()

    @staticmethod
    def _learn(
        state: SeriesState, compiled: CompiledRules,
        readings: dict[str, tuple[float | None, float]], window: WindowAggregate,
    ) -> None:
        """Learn the window's figures, except those of rules bad or firing (held instead)."""
        anomaly = compiled.rules.anomaly
        learned = False
        for check in compiled.learned:
            value, events = readings[check.metric.name]
            if value is None or events < check.min_calls:
                continue
            rule = state.rules.get(check.rule)
            if rule is not None and rule.troubled:
                rule.hold(value, anomaly.baseline_windows)
                continue
            _baseline(state, check.metric.name, anomaly).add(value)
            learned = True
        if learned:
            _baseline(state, VOLUME, anomaly).add(window.events)
            state.own_windows += 1

    def _notify(
        self, part: PartitionState, state: SeriesState, compiled: CompiledRules, judged: _Judged,
        window: WindowAggregate,
    ) -> Alert | None:
        """The incident's event for this width's step, if one is due."""
        if judged.step is None:
            return None
        key = f"{series_identity(window.series)}\x1f{judged.check.rule}"
        incident = part.incidents.get(key)
        if incident is None:
            if judged.step is not Step.FIRE:
                return None
            incident = part.incidents[key] = Incident(started_ns=judged.rule.started_ns)
        part.touch_incident(key)
        incident.last_ns = window.window_end_ns
        event = self._incident_step(incident, judged.step, window, compiled.pages(window.width_s))
        if not incident.widths:
            del part.incidents[key]
        if event is None:
            return None
        return self._alert(state, compiled.rules, judged, window, incident, event)

    def _incident_step(
        self, incident: Incident, step: Step, window: WindowAggregate, pages: bool
    ) -> tuple[State, bool] | None:
        """Advance an incident by one width's step; return (state, repeat) when an event is due."""
        width, end_ns = window.width_s, window.window_end_ns
        if step is Step.FIRE:
            incident.widths = sorted({*incident.widths, width})
        if step in (Step.FIRE, Step.STILL):
            return self._firing_event(incident, end_ns, pages)
        incident.widths = [w for w in incident.widths if w != width]
        if incident.widths or not incident.notified:
            return None
        return ("accepted" if step is Step.ACCEPT else "resolved"), False

    def _firing_event(
        self, incident: Incident, end_ns: int, pages: bool
    ) -> tuple[State, bool] | None:
        if not pages:
            return None
        if not incident.notified:
            incident.notified, incident.notified_ns = True, end_ns
            return "firing", False
        if end_ns - incident.notified_ns < self.repeat_interval_ns:
            return None
        incident.notified_ns = end_ns
        return "firing", True

    def _alert(
        self, state: SeriesState, rules: RuleSet, judged: _Judged, window: WindowAggregate,
        incident: Incident, transition: tuple[State, bool],
    ) -> Alert:
        alert_state, repeat = transition
        check, verdict = judged.check, judged.verdict
        baseline_version = self._baseline_version(state, rules)
        fp = fingerprint(window.series, check.rule)
        return Alert(
            alert_id=alert_id(fp, alert_state, incident.started_ns, window.window_end_ns),
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
            started_ns=incident.started_ns,
            observed=verdict.level if alert_state == "resolved" else verdict.observed,
            baseline=verdict.baseline,
            threshold=verdict.resolve_limit if alert_state == "resolved" else verdict.threshold,
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
        return max(candidates, key=lambda s: s.last_ns, default=None)

    # -- state ----------------------------------------------------------------------------------

    def changed_states(self, partition: int = 0) -> dict[bytes, bytes | None]:
        """The state entries of ``partition`` changed since the last call, by stable key.

        Keys start with ``s\\x1f`` (a series: its baselines and rule states), ``i\\x1f`` (an
        incident across widths), ``b\\x1f`` (a prompt's burn-rate state) or ``c\\x1f`` (a
        prompt's spend state), then the identity as UTF-8; values are orjson documents of a few
        KB at most (bounded by the rules' ``baseline_windows`` and burn windows, see
        :mod:`.state`); ``None`` means the entry was deleted (an incident over, a series idle
        beyond the TTL). Series idle beyond the TTL are dropped first. Store each entry under
        its key (a compacted changelog, a key-value table) and pass all of them to
        :meth:`restore_states` to rebuild the partition.
        """
        part = self._partition(partition)
        self._unindex(part.expire(self.state_ttl_ns))
        return part.changed()

    def all_states(self, partition: int = 0) -> dict[bytes, bytes]:
        """Every entry of ``partition`` (series idle beyond the TTL dropped first), for a
        checkpoint that stores the whole state; the change record starts empty."""
        self.changed_states(partition)
        return self._partition(partition).everything()

    def restore_states(self, partition: int, entries: Mapping[bytes, bytes]) -> None:
        """Rebuild ``partition`` from every current entry of :meth:`changed_states` (an entry
        that cannot be read is dropped and logged); the change record starts empty."""
        self.forget(partition)
        part = self._partitions[partition] = PartitionState()
        unreadable = 0
        for key, value in entries.items():
            try:
                self._load_entry(part, key, value)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError):
                unreadable += 1
        if unreadable:
            log.warning("promptprof.alert_state_discarded", partition=partition,
                        entries=unreadable, reason="unreadable entries")
        loaded: list[Persistent] = [*part.series.values(), *part.incidents.values(),
                                    *part.budgets.values()]
        part.newest_ns = max((x.last_ns for x in loaded), default=0)
        for series_key, state in part.series.items():
            self._families.setdefault(state.family, {})[series_key] = state

    def _load_entry(self, part: PartitionState, key: bytes, value: bytes) -> None:
        document = orjson.loads(value)
        if key.startswith(SERIES):
            anomaly = self._compiled(document["prompt_id"]).rules.anomaly
            part.series[key[len(SERIES):].decode()] = SeriesState.from_state(document, anomaly)
        elif key.startswith(INCIDENT):
            part.incidents[key[len(INCIDENT):].decode()] = Incident.from_state(document)
        elif key.startswith((BURN, SPEND)):
            part.budgets[key] = self._budgets.load(key, document)
        else:
            raise ValueError(f"unknown alert state entry {key[:2]!r}")

    def state_bytes(self, partition: int = 0) -> bytes:
        """Every entry of the partition as one blob (series idle beyond the TTL dropped first);
        for checkpoints that store a partition whole. Prefer :meth:`changed_states` at scale."""
        part = self._partition(partition)
        self._unindex(part.expire(self.state_ttl_ns))
        return pack_entries(part.everything())

    def restore(self, partition: int, data: bytes | None) -> None:
        """Load a partition from :meth:`state_bytes` output (or start it empty)."""
        try:
            entries = unpack_entries(data) if data else {}
        except ValueError as exc:
            log.warning("promptprof.alert_state_discarded", partition=partition, reason=str(exc))
            entries = {}
        self.restore_states(partition, entries)

    def _unindex(self, states: Iterable[SeriesState]) -> None:
        for state in states:
            members = self._families.get(state.family, {})
            for key in [k for k, s in members.items() if s is state]:
                del members[key]
            if not members:
                self._families.pop(state.family, None)

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's state (its checkpoint stays wherever it was saved)."""
        part = self._partitions.pop(partition, None)
        if part is not None:
            self._unindex(part.series.values())

    def series_count(self) -> int:
        """Series with state, over every partition."""
        return sum(len(part.series) for part in self._partitions.values())


def describe(
    check: Check, verdict: Verdict, window: WindowAggregate, state: State, baseline_version: str
) -> str:
    """The one-line message of an alert event."""
    s = window.series
    fmt = check.metric.format
    where = f"{s.prompt_id} {s.prompt_version} on {s.model} ({s.service}, {window.width_s}s)"
    label = check.metric.label
    if state == "resolved":
        if isinstance(check, SloCheck):
            what, band = fmt(verdict.observed), "its SLO"
        else:
            what = f"{fmt(verdict.level)} over its last {verdict.recovered} windows"
            band = "the band of its pre-incident baseline"
        return (
            f"resolved: {where}: {label} {what} is back within {band} "
            f"({fmt(verdict.resolve_limit)})"
        )
    if state == "accepted":
        return (
            f"accepted as new baseline: {where}: {label} {fmt(verdict.observed)} stayed "
            f"{verdict.direction} its former baseline {fmt(verdict.baseline)} for the rule's "
            "accept_after_s; it is judged against its new level from now on"
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
