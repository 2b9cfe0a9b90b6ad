"""Error-budget burn rates and spend projections, per prompt, from closed windows.

Both are judged per prompt (service and prompt id: every version, model and label value
together), from the windows of one width: ``width_s`` of the rule section, or else the smallest
width the prompt is seen with (a smaller width seen later restarts the count on it). A window
that ends no later than the last one counted is ignored (re-delivery).

**Burn rates** (the SRE workbook's multi-window, multi-burn-rate alerts). An objective says what
share of calls must be good: ``success`` counts failed calls as bad, ``latency`` counts calls
slower than ``threshold_ms``. The *burn rate* over a span is the share of bad calls in it over
the error budget (1 - objective): 1 spends the budget exactly over the SLO period, 14.4 spends 2 %
of a 30-day budget in an hour. A burn window ``{long_s, short_s, burn_rate}`` fires when the burn
rate over both the long and the short span reaches ``burn_rate`` (the long span makes it
significant, the short one makes it current) and resolves as soon as one of them is below it.
Counts are weighted (a sampled event stands for 1/sample_rate calls). The calls over a latency
threshold are counted exactly where the threshold is configured: the worker has its windows
count the calls slower than every latency-SLO threshold of its rules (``latency_over_ms``). A
window that lacks the count (written before the threshold was configured) falls back to its
latency sketch: the calls in bins above the threshold's bin (1 % relative accuracy), or without
sketches an estimate from its percentiles.

Spans are summed from buckets of ``max(width, short_s / 5, long_s / MAX_BUCKETS)`` seconds, at
most :data:`MAX_BUCKETS` per burn window, so the state of a prompt is bounded.

**Spend.** The spend of the current UTC day or calendar month (the windows' weighted
``cost_usd_sum``, from the first window counted in the period) plus the spend rate over the last
``rate_window_s`` times the time left in the period is the *projected* spend; the alert fires
when it exceeds the budget, resolves when it is back under it, and says both numbers.

Firing, reminders (every ``repeat_interval_s`` of event time) and resolution work as for the
other rules; the events carry ``kind`` ``burn_rate`` or ``spend`` and version and model ``*``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal

from promptprof_processor.alerts.events import (
    ANY,
    Alert,
    AlertWindow,
    Kind,
    State,
    alert_id,
    fingerprint,
)
from promptprof_processor.alerts.rules import BurnWindow, ErrorBudget, Objective, RuleSet, Spend
from promptprof_processor.alerts.state import BURN, SPEND, PartitionState, Persistent
from promptprof_processor.settings import NS_PER_S
from promptprof_processor.windows.figures import SeriesTags, WindowAggregate
from promptprof_processor.windows.sketches import new_sketch, sketch_bins

MAX_BUCKETS = 60
SLO_PERIOD_S = 30 * 86_400  # for "the budget lasts ..." in messages
_MULTIPLIER: float = new_sketch()._mapping._multiplier
Objectives = Literal["success", "latency"]


@dataclass(slots=True)
class Episode:
    """Whether a budget rule fires, since when, and when it last notified."""

    firing: bool = False
    started_ns: int = 0
    notified_ns: int = 0

    def step(self, bad: bool, window: WindowAggregate, repeat_ns: int) -> tuple[State, bool] | None:
        """Fire on the first bad window, remind after ``repeat_ns``, resolve on a good one."""
        end_ns = window.window_end_ns
        if not self.firing:
            if not bad:
                return None
            self.firing, self.started_ns, self.notified_ns = True, window.window_start_ns, end_ns
            return "firing", False
        if not bad:
            self.firing = False
            return "resolved", False
        if end_ns - self.notified_ns < repeat_ns:
            return None
        self.notified_ns = end_ns
        return "firing", True

    def to_state(self) -> list[Any]:
        """JSON-native state."""
        return [self.firing, self.started_ns, self.notified_ns]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> Episode:
        """Restore from :meth:`to_state` output."""
        firing, started_ns, notified_ns = state
        return cls(bool(firing), int(started_ns), int(notified_ns))


@dataclass(slots=True)
class Ring:
    """Sums of a few figures per time bucket over the last ``size`` buckets."""

    bucket_ns: int
    size: int
    buckets: dict[int, list[float]] = field(default_factory=dict)

    def add(self, at_ns: int, values: Sequence[float]) -> None:
        """Add ``values`` to the bucket of ``at_ns`` and forget buckets beyond the ring."""
        index = at_ns // self.bucket_ns
        found = self.buckets.setdefault(index, [0.0] * len(values))
        for i, value in enumerate(values):
            found[i] += value
        for old in [k for k in self.buckets if k <= index - self.size]:
            del self.buckets[old]

    def total(self, now_ns: int, span_ns: int) -> list[float]:
        """The sums over the buckets within ``span_ns`` up to the bucket of ``now_ns``."""
        index = now_ns // self.bucket_ns
        first = index - max(1, math.ceil(span_ns / self.bucket_ns)) + 1
        chosen = [v for k, v in self.buckets.items() if first <= k <= index]
        return [math.fsum(column) for column in zip(*chosen, strict=True)] if chosen else []

    def to_state(self) -> list[Any]:
        """JSON-native state: bucket size, ring size and the non-empty buckets."""
        return [self.bucket_ns, self.size, [[k, *v] for k, v in sorted(self.buckets.items())]]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> Ring:
        """Restore from :meth:`to_state` output."""
        bucket_ns, size, buckets = state
        return cls(int(bucket_ns), int(size), {int(b[0]): [float(v) for v in b[1:]]
                                               for b in buckets})


@dataclass(slots=True)
class BurnState:
    """A prompt's bucketed counts (calls, failed, slow) per burn window, and its episodes."""

    width_s: int
    rings: list[Ring]
    episodes: dict[str, Episode] = field(default_factory=dict)
    last_ns: int = 0

    def to_state(self) -> dict[str, Any]:
        """JSON-native state."""
        return {
            "width_s": self.width_s, "last_ns": self.last_ns,
            "rings": [r.to_state() for r in self.rings],
            "episodes": {k: e.to_state() for k, e in self.episodes.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BurnState:
        """Restore from :meth:`to_state` output."""
        return cls(
            int(state["width_s"]), [Ring.from_state(r) for r in state["rings"]],
            {k: Episode.from_state(e) for k, e in state["episodes"].items()},
            int(state["last_ns"]),
        )


@dataclass(slots=True)
class SpendState:
    """A prompt's spend in the current period, its recent spend rate, and its episode."""

    width_s: int
    period_start_ns: int
    spent_usd: float
    rate_since_ns: int  # the start of the first window the recent rate has seen
    recent: Ring
    episode: Episode = field(default_factory=Episode)
    last_ns: int = 0

    def to_state(self) -> dict[str, Any]:
        """JSON-native state."""
        return {
            "width_s": self.width_s, "period_start_ns": self.period_start_ns,
            "spent_usd": self.spent_usd, "rate_since_ns": self.rate_since_ns,
            "recent": self.recent.to_state(), "episode": self.episode.to_state(),
            "last_ns": self.last_ns,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SpendState:
        """Restore from :meth:`to_state` output."""
        return cls(
            int(state["width_s"]), int(state["period_start_ns"]), float(state["spent_usd"]),
            int(state["rate_since_ns"]), Ring.from_state(state["recent"]),
            Episode.from_state(state["episode"]), int(state["last_ns"]),
        )


def calls_over(window: WindowAggregate, threshold_ms: float) -> float:
    """The (weighted) calls of the window slower than ``threshold_ms``.

    Exact when the window counted that threshold (``latency_over_ms``). Else from the latency
    sketch: the counts of the bins above the threshold's bin (values within 1 % of the threshold
    count as under it); without a sketch, estimated from the percentiles by linear interpolation
    of the rank between them.
    """
    exact = window.latency_over_ms.get(threshold_ms)
    if exact is not None:
        return exact
    data = window.sketches.get("latency_ms")
    if data is not None:
        key = math.ceil(math.log2(threshold_ms) * _MULTIPLIER)
        return float(math.fsum(count for bin_key, count in sketch_bins(data) if bin_key > key))
    return window.calls * _share_over(window, threshold_ms)


def _share_over(window: WindowAggregate, threshold_ms: float) -> float:
    p = window.latency_ms
    if p is None or threshold_ms >= p.max:
        return 0.0
    points = [(0.0, 0.0), (p.p50, 0.5), (p.p90, 0.9), (p.p95, 0.95), (p.p99, 0.99), (p.max, 1.0)]
    for (v0, q0), (v1, q1) in pairwise(points):
        if threshold_ms <= v1:
            below = q0 if v1 <= v0 else q0 + (q1 - q0) * (threshold_ms - v0) / (v1 - v0)
            return 1.0 - below
    return 0.0


def _prompt_key(series: SeriesTags) -> str:
    return f"{series.service}\x1f{series.prompt_id}"


def _prompt_series(series: SeriesTags) -> SeriesTags:
    return SeriesTags(service=series.service, prompt_id=series.prompt_id,
                      prompt_version=ANY, model=ANY)


def _counted(width_s: int | None, current: int | None, window: WindowAggregate) -> bool | None:
    """Whether the window's width is counted: True, False, or None (a smaller width: restart)."""
    if width_s is not None:
        return window.width_s == width_s
    if current is None or window.width_s < current:
        return None
    return window.width_s == current


def _ring_for(burn: BurnWindow, width_s: int) -> Ring:
    bucket_s = max(width_s, burn.short_s / 5, burn.long_s / MAX_BUCKETS)
    bucket_ns = round(bucket_s * NS_PER_S)
    return Ring(bucket_ns, math.ceil(burn.long_s * NS_PER_S / bucket_ns))


def period_bounds(period: Literal["day", "month"], at_ns: int) -> tuple[int, int]:
    """The start and end (Unix ns) of the UTC day or calendar month holding ``at_ns``."""
    if period == "day":
        day_ns = 86_400 * NS_PER_S
        start = at_ns - at_ns % day_ns
        return start, start + day_ns
    moment = datetime.fromtimestamp(at_ns // NS_PER_S, tz=UTC)
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return int(first.timestamp()) * NS_PER_S, int(following.timestamp()) * NS_PER_S


class Budgets:
    """Burn-rate and spend rules over a partition's windows (state lives in the partition)."""

    def __init__(self, repeat_interval_ns: int) -> None:
        """Rules that remind every ``repeat_interval_ns`` of event time while firing."""
        self.repeat_ns = repeat_interval_ns

    def load(self, key: bytes, document: Any) -> Persistent:
        """A burn or spend state from its entry."""
        return BurnState.from_state(document) if key.startswith(BURN) else (
            SpendState.from_state(document)
        )

    def observe(self, part: PartitionState, rules: RuleSet, window: WindowAggregate) -> list[Alert]:
        """The burn-rate and spend events this window triggers."""
        alerts: list[Alert] = []
        if rules.error_budget is not None:
            alerts += self._burn(part, rules.error_budget, window)
        if rules.spend is not None:
            alerts += self._spend(part, rules.spend, window)
        return alerts

    # -- burn rates ---------------------------------------------------------------------------

    def _burn(self, part: PartitionState, budget: ErrorBudget, window: WindowAggregate
              ) -> list[Alert]:
        key = BURN + _prompt_key(window.series).encode()
        found = part.budgets.get(key)
        state = found if isinstance(found, BurnState) else None
        counted = _counted(budget.width_s, None if state is None else state.width_s, window)
        if counted is False or (state is not None and window.window_end_ns <= state.last_ns):
            return []
        if state is None or counted is None:
            rings = [_ring_for(b, window.width_s) for b in budget.burn_windows]
            state = BurnState(window.width_s, rings)
            part.budgets[key] = state
        part.touch_budget(key)
        state.last_ns = window.window_end_ns
        slow = 0.0
        if budget.latency is not None and budget.latency.threshold_ms is not None:
            slow = calls_over(window, budget.latency.threshold_ms)
        for ring in state.rings:
            ring.add(window.window_start_ns, (window.calls, window.errors, slow))
        given: tuple[tuple[Objectives, Objective | None, int], ...] = (
            ("success", budget.success, 1), ("latency", budget.latency, 2),
        )
        objectives = [(n, o, c) for n, o, c in given if o is not None]
        return [
            alert
            for name, objective, column in objectives
            for burn, ring in zip(budget.burn_windows, state.rings, strict=True)
            if (alert := self._judge_burn(state, name, objective, column, burn, ring, window))
            is not None
        ]

    def _judge_burn(
        self, state: BurnState, name: Objectives, objective: Objective, column: int,
        burn: BurnWindow, ring: Ring, window: WindowAggregate,
    ) -> Alert | None:
        now = window.window_start_ns
        allowed = 1.0 - objective.objective
        long_rate = _burn_rate(ring.total(now, burn.long_s * NS_PER_S), column, allowed)
        short_rate = _burn_rate(ring.total(now, burn.short_s * NS_PER_S), column, allowed)
        rule = f"burn.{name}.{burn.long_s}s"
        episode = state.episodes.setdefault(rule, Episode())
        bad = min(long_rate, short_rate) >= burn.burn_rate
        transition = episode.step(bad, window, self.repeat_ns)
        if not episode.firing:
            del state.episodes[rule]
        if transition is None:
            return None
        what = "success" if name == "success" else f"latency under {objective.threshold_ms:,.0f} ms"
        message = (
            f"{window.series.prompt_id} ({window.series.service}): the error budget of "
            f"{objective.objective:.2%} {what} burns {long_rate:.1f}x over "
            f"{_span(burn.long_s)} and {short_rate:.1f}x over {_span(burn.short_s)} "
            f"(alert at {burn.burn_rate:g}x)"
        )
        if transition[0] == "firing":
            message += f"; at this rate a 30-day budget lasts {_lasts(long_rate)}"
        else:
            message = "resolved: " + message
        return _budget_alert(
            "burn_rate", rule, f"burn_rate_{name}", burn.severity, window, episode, transition,
            long_rate, burn.burn_rate, message,
        )

    # -- spend --------------------------------------------------------------------------------

    def _spend(self, part: PartitionState, spend: Spend, window: WindowAggregate) -> list[Alert]:
        key = SPEND + _prompt_key(window.series).encode()
        found = part.budgets.get(key)
        state = found if isinstance(found, SpendState) else None
        counted = _counted(spend.width_s, None if state is None else state.width_s, window)
        if counted is False or (state is not None and window.window_end_ns <= state.last_ns):
            return []
        start, end = period_bounds(spend.period, window.window_start_ns)
        if state is None or counted is None:
            bucket_ns = max(window.width_s, spend.rate_window_s // 12) * NS_PER_S
            recent = Ring(bucket_ns, math.ceil(spend.rate_window_s * NS_PER_S / bucket_ns))
            state = SpendState(window.width_s, start, 0.0, window.window_start_ns, recent)
            part.budgets[key] = state
        elif state.period_start_ns != start:  # a new period: the spend restarts, the rate goes on
            state.period_start_ns, state.spent_usd = start, 0.0
        part.touch_budget(key)
        state.last_ns = window.window_end_ns
        state.spent_usd += window.cost_usd_sum
        state.recent.add(window.window_start_ns, (window.cost_usd_sum,))
        return self._judge_spend(state, spend, window, end)

    def _judge_spend(
        self, state: SpendState, spend: Spend, window: WindowAggregate, period_end_ns: int
    ) -> list[Alert]:
        now = window.window_end_ns
        covered = min(spend.rate_window_s * NS_PER_S, now - state.rate_since_ns)
        recent = state.recent.total(window.window_start_ns, spend.rate_window_s * NS_PER_S)
        per_ns = (recent[0] if recent else 0.0) / covered if covered > 0 else 0.0
        projected = state.spent_usd + per_ns * (period_end_ns - now)
        transition = state.episode.step(projected > spend.budget_usd, window, self.repeat_ns)
        if transition is None:
            return []
        per_hour = per_ns * 3600 * NS_PER_S
        message = (
            f"{window.series.prompt_id} ({window.series.service}): spend projected to reach "
            f"${projected:,.2f} by the end of the {spend.period} (UTC) at the current rate of "
            f"${per_hour:,.2f}/h; ${state.spent_usd:,.2f} spent so far, budget "
            f"${spend.budget_usd:,.2f}"
        )
        if transition[0] == "resolved":
            message = "resolved: " + message
        alert = _budget_alert(
            "spend", f"spend.{spend.period}", "projected_spend_usd", spend.severity, window,
            state.episode, transition, projected, spend.budget_usd, message,
            baseline=state.spent_usd,
        )
        return [alert]


def _burn_rate(totals: list[float], column: int, allowed: float) -> float:
    if not totals or totals[0] <= 0:
        return 0.0
    return totals[column] / totals[0] / allowed


def _span(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _lasts(rate: float) -> str:
    hours = SLO_PERIOD_S / 3600 / rate if rate > 0 else math.inf
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _budget_alert(
    kind: Kind, rule: str, metric: str, severity: Any, window: WindowAggregate,
    episode: Episode, transition: tuple[State, bool], observed: float, threshold: float,
    message: str, *, baseline: float | None = None,
) -> Alert:
    state, repeat = transition
    series = _prompt_series(window.series)
    fp = fingerprint(series, rule)
    return Alert(
        alert_id=alert_id(fp, state, episode.started_ns, window.window_end_ns),
        fingerprint=fp, state=state, repeat=repeat, kind=kind, rule=rule, metric=metric,
        severity=severity, series=series,
        window=AlertWindow(start_ns=window.window_start_ns, end_ns=window.window_end_ns,
                           width_s=window.width_s),
        started_ns=episode.started_ns, observed=observed, baseline=baseline,
        threshold=threshold, score=None, direction="above", message=message,
    )
