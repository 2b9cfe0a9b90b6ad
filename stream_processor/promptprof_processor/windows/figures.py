"""Per-window, per-series figures: the mutable :class:`Accumulator` and the closed
:class:`WindowAggregate`, plus :func:`rollup` to merge closed windows into a longer one.

Sampling: an event recorded at ``sample_rate`` r stands for 1/r calls. ``events`` counts the
events received and ``observed_events`` the events that carried each figure; every other count,
sum and percentile is the weighted estimate of real calls (they coincide when nothing is
sampled). A test of a figure rests on its observed events: 3 sampled events carrying a TTFT are
3 measurements, whatever calls they stand for.

Latency SLOs: for each threshold given to :meth:`Accumulator.add_calls` (the aggregator passes
the configured latency-SLO thresholds, ``windows.latency_thresholds_ms``), ``latency_over_ms``
counts exactly the (weighted) calls slower than it. A threshold is kept only where every call
event of the window was counted against it (a window partly aggregated before the threshold was
configured does not claim a count).

Call events reach an accumulator as rows (:meth:`Accumulator.add_rows`: a tuple of the
:data:`CALL_FIELDS` values per event) and wait there until :data:`FOLD_ROWS` of them are pending
or the figures are read, then go into the figures by column: with many series, a record holds a
call or two of each, and per-call work by column cost more than the call's whole aggregation.
Pending rows are part of the state (:meth:`Accumulator.to_state`), and reading the figures does
not fold them in place, so a window's figures never depend on when it was read or checkpointed.

A closed window keeps its DDSketches (``sketches``, encoded by
:func:`promptprof_processor.windows.sketches.encode_sketch`) and the exact sums and counts behind
every
mean and rate, so :func:`rollup` of windows gives the same figures as aggregating their events
in one window: percentiles bin for bin, sums up to float rounding.

Percentiles follow DDSketch's rank convention (the value at rank floor(q * (n - 1)), 1% relative
accuracy), clamped to the exact minimum and maximum. Error types beyond 32 distinct ones in a
window are counted under ``"__other__"``; an error without a type under ``"unknown"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import compress, pairwise, repeat
from operator import attrgetter
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from promptprof_processor.ingest.validation import CallColumns
from promptprof_processor.units import NS_PER_S
from promptprof_processor.windows.sketches import Distribution, SketchData, decode_sketch

UNKNOWN_ERROR = "unknown"
OTHER_ERRORS = "__other__"
MAX_ERROR_TYPES = 32

#: sketch name -> the field it sketches (also the ``observed_events`` keys of those fields)
SKETCHED = {
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "quality": "quality_score",
}
#: The fields :meth:`Accumulator.add_calls` reads.
CALL_FIELDS = (*SKETCHED.values(), "sample_rate", "cost_usd", "status", "error_type")
#: The fields :meth:`Accumulator.add_quality` reads.
QUALITY_FIELDS = ("quality_score", "sample_rate")
_is_error = "error".__eq__
#: Pending call rows an accumulator folds into its figures at once.
FOLD_ROWS = 256
#: ``observed_events`` keys beside the sketch names: cost known, failed calls.
COST_OBSERVED = "cost_usd"
ERRORS_OBSERVED = "errors"


class SeriesTags(BaseModel):
    """A series' identity as written to InfluxDB; ``labels`` holds non-empty values only."""

    model_config = ConfigDict(frozen=True)

    service: str
    prompt_id: str
    prompt_version: str
    model: str
    labels: dict[str, str] = {}


class Percentiles(BaseModel):
    """Latency-style percentiles (1% relative accuracy) and the exact maximum."""

    model_config = ConfigDict(frozen=True)

    p50: float
    p90: float
    p95: float
    p99: float
    max: float


class TokenStats(BaseModel):
    """Token figures over the calls whose token count is known."""

    model_config = ConfigDict(frozen=True)

    sum: float
    mean: float
    p95: float
    calls: float


class WindowAggregate(BaseModel):
    """The figures of one series over one closed event-time window.

    ``sketches`` holds the encoded sketches behind the figures, by name: ``latency_ms``,
    ``ttft_ms``, ``input_tokens``, ``output_tokens``, ``quality`` (each only when it has values).
    ``observed_events`` counts, unweighted, the events that carried each of those figures, and
    under ``cost_usd`` those with a known cost and under ``errors`` the failed ones.
    ``latency_over_ms`` maps each latency-SLO threshold counted at aggregation to the weighted
    calls slower than it. Both are empty in windows written before they existed.
    """

    model_config = ConfigDict(frozen=True)

    window_start_ns: int
    window_end_ns: int
    width_s: int
    series: SeriesTags
    events: int
    calls: float
    errors: float
    error_rate: float | None
    errors_by_type: dict[str, float]
    latency_ms: Percentiles | None
    ttft_ms: Percentiles | None
    ttft_calls: float
    input_tokens: TokenStats | None
    output_tokens: TokenStats | None
    cost_usd_sum: float
    cost_per_call_usd: float | None
    cost_known_calls: float
    cost_unknown_calls: float
    quality_mean: float | None
    quality_p10: float | None
    quality_scored: float
    late_events: int
    sketches: dict[str, SketchData]
    observed_events: dict[str, int] = {}
    latency_over_ms: dict[float, float] = {}

    def to_bytes(self) -> bytes:
        """orjson bytes that :meth:`from_bytes` restores exactly."""
        return orjson.dumps(self.model_dump(), option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowAggregate:
        """Restore a window from :meth:`to_bytes` output."""
        return cls.model_validate(orjson.loads(data))


class Accumulator:
    """The running figures of one series in one window; mergeable and checkpointable."""

    __slots__ = (
        "calls",
        "cost_known_calls",
        "cost_unknown_calls",
        "cost_usd",
        "errors",
        "errors_by_type",
        "events",
        "late_by_width",
        "latency_over_ms",
        "observed_events",
        "rows",
        "sketches",
    )

    def __init__(self) -> None:
        """An empty accumulator."""
        self.events = 0
        self.calls = 0.0
        self.errors = 0.0
        self.errors_by_type: dict[str, float] = {}
        self.cost_usd = 0.0
        self.cost_known_calls = 0.0
        self.cost_unknown_calls = 0.0
        self.late_by_width: dict[int, int] = {}
        self.sketches: dict[str, Distribution] = {}
        self.observed_events: dict[str, int] = {}
        self.latency_over_ms: dict[float, float] = {}
        self.rows: list[Sequence[Any]] = []  # pending call events, :data:`CALL_FIELDS` values

    def add_rows(self, rows: Sequence[Sequence[Any]], thresholds_ms: Sequence[float] = ()) -> None:
        """Aggregate call events of this series and window given as rows of
        :data:`CALL_FIELDS` values (kept pending, folded in bulk), counting the calls slower
        than each of ``thresholds_ms`` at once."""
        if thresholds_ms or self.latency_over_ms:
            self._count_over(_columns_of(rows), thresholds_ms)
        self.events += len(rows)
        self.rows += rows
        if len(self.rows) >= FOLD_ROWS:
            self._fold()

    def _fold(self) -> None:
        rows, self.rows = self.rows, []
        self._add_call_columns(_columns_of(rows))

    def add_calls(self, calls: CallColumns, thresholds_ms: Sequence[float] = ()) -> None:
        """Aggregate call events of this series and window (the :data:`CALL_FIELDS`), counting
        the calls slower than each of ``thresholds_ms``."""
        if thresholds_ms or self.latency_over_ms:
            self._count_over(calls, thresholds_ms)
        self.events += calls.count
        self._add_call_columns(calls)

    def _count_over(self, calls: CallColumns, thresholds_ms: Sequence[float]) -> None:
        over = _over(calls, _weights(calls.fields["sample_rate"], calls.count), thresholds_ms)
        self.latency_over_ms = _merged_counts(self.latency_over_ms, self.events, over, calls.count)

    def _add_call_columns(self, calls: CallColumns) -> None:
        fields, count = calls.fields, calls.count
        weights = _weights(fields["sample_rate"], count)
        self.calls += count if weights is None else math.fsum(weights)
        for name, field in SKETCHED.items():
            if fields[field] is not None:
                self._add_column(name, calls.column(field), weights)
        self._add_costs(calls.column("cost_usd"), weights)
        status = fields["status"]
        if status == "error" or (type(status) is list and "error" in status):
            failed = list(map(_is_error, calls.column("status")))
            self._add_errors(calls.column("error_type"), weights, failed)

    def add_quality(self, scores: CallColumns) -> None:
        """Aggregate quality events scoring calls of this series and window
        (the :data:`QUALITY_FIELDS`)."""
        weights = _weights(scores.fields["sample_rate"], scores.count)
        self._add_column("quality", scores.column("quality_score"), weights)

    def _add_column(self, name: str, column: list[Any], weights: list[float] | None) -> None:
        values, weights = _known(column, weights)
        if values:
            self._observe(name, len(values))
            sketch = self.sketches.get(name)
            if sketch is None:
                sketch = self.sketches[name] = Distribution()
            sketch.add(values, weights)

    def _add_costs(self, costs: list[float | None], weights: list[float] | None) -> None:
        known, known_weights = _known(costs, weights)
        self._observe(COST_OBSERVED, len(known))
        if known_weights is None:
            self.cost_usd += math.fsum(known)
            self.cost_known_calls += len(known)
            self.cost_unknown_calls += len(costs) - len(known)
        else:
            self.cost_usd += math.fsum(c * w for c, w in zip(known, known_weights, strict=True))
            self.cost_known_calls += math.fsum(known_weights)
            self.cost_unknown_calls += math.fsum(weights or ()) - math.fsum(known_weights)

    def _add_errors(
        self, error_types: list[str | None], weights: list[float] | None, failed: list[bool]
    ) -> None:
        self._observe(ERRORS_OBSERVED, sum(failed))
        errors = compress(error_types, failed)
        for error_type, weight in zip(
            errors, compress(weights or repeat(1.0), failed), strict=True
        ):
            self._add_error(error_type or UNKNOWN_ERROR, weight)

    def _add_error(self, error_type: str, weight: float) -> None:
        by_type = self.errors_by_type
        if error_type not in by_type and len(by_type) >= MAX_ERROR_TYPES:
            error_type = OTHER_ERRORS
        by_type[error_type] = by_type.get(error_type, 0.0) + weight
        self.errors += weight

    def _observe(self, figure: str, events: int) -> None:
        if events:
            self.observed_events[figure] = self.observed_events.get(figure, 0) + events

    def add_late(self, width_s: int, events: int) -> None:
        """Count events that arrived after their window of ``width_s`` had closed."""
        self.late_by_width[width_s] = self.late_by_width.get(width_s, 0) + events

    def merge(self, other: Accumulator) -> None:
        """Add another accumulator's figures to this one."""
        self.latency_over_ms = _merged_counts(
            self.latency_over_ms, self.events, other.latency_over_ms, other.events
        )
        self.events += other.events
        self.calls += other.calls
        for error_type, count in other.errors_by_type.items():
            self._add_error(error_type, count)
        self.cost_usd += other.cost_usd
        self.cost_known_calls += other.cost_known_calls
        self.cost_unknown_calls += other.cost_unknown_calls
        for width, late in other.late_by_width.items():
            self.add_late(width, late)
        for figure, events in other.observed_events.items():
            self._observe(figure, events)
        for name, sketch in other.sketches.items():
            mine = self.sketches.get(name)
            if mine is None:
                mine = self.sketches[name] = Distribution()
            mine.merge(sketch)
        self.rows += other.rows
        if len(self.rows) >= FOLD_ROWS:
            self._fold()

    def to_state(self) -> dict[str, Any]:
        """A JSON-native snapshot for :meth:`from_state`."""
        return {
            "events": self.events,
            "calls": self.calls,
            "errors": self.errors,
            "errors_by_type": dict(self.errors_by_type),
            "cost_usd": self.cost_usd,
            "cost_known_calls": self.cost_known_calls,
            "cost_unknown_calls": self.cost_unknown_calls,
            "late_by_width": [[w, n] for w, n in self.late_by_width.items()],
            "sketches": {name: s.state() for name, s in self.sketches.items()},
            "observed_events": dict(self.observed_events),
            "latency_over_ms": [[t, n] for t, n in self.latency_over_ms.items()],
            "rows": list(map(list, self.rows)),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Accumulator:
        """Restore an accumulator from :meth:`to_state` output."""
        acc = cls()
        acc.events = state["events"]
        acc.calls = state["calls"]
        acc.errors = state["errors"]
        acc.errors_by_type = dict(state["errors_by_type"])
        acc.cost_usd = state["cost_usd"]
        acc.cost_known_calls = state["cost_known_calls"]
        acc.cost_unknown_calls = state["cost_unknown_calls"]
        acc.late_by_width = dict(state["late_by_width"])
        acc.sketches = {name: Distribution.from_state(d) for name, d in state["sketches"].items()}
        # absent from the state of a version before them: none observed, no threshold counted
        acc.observed_events = dict(state.get("observed_events", {}))
        acc.latency_over_ms = {float(t): float(n) for t, n in state.get("latency_over_ms", [])}
        acc.rows = state.get("rows", [])
        return acc

    @classmethod
    def from_window(cls, window: WindowAggregate) -> Accumulator:
        """The accumulator behind a closed window (its late count is not carried)."""
        acc = cls()
        acc.events = window.events
        acc.calls = window.calls
        acc.errors = window.errors
        acc.errors_by_type = dict(window.errors_by_type)
        acc.cost_usd = window.cost_usd_sum
        acc.cost_known_calls = window.cost_known_calls
        acc.cost_unknown_calls = window.cost_unknown_calls
        acc.sketches = {name: Distribution(decode_sketch(d)) for name, d in window.sketches.items()}
        acc.observed_events = dict(window.observed_events)
        acc.latency_over_ms = dict(window.latency_over_ms)
        return acc

    def finish(
        self, series: SeriesTags, start_ns: int, end_ns: int, late_events: int
    ) -> WindowAggregate:
        """The closed-window figures of this accumulator (its pending rows folded into a copy:
        this one is left as it was)."""
        if self.rows:
            folded = Accumulator()
            folded.merge(self)
            folded._fold()
            return folded.finish(series, start_ns, end_ns, late_events)
        get = self.sketches.get
        ttft = get("ttft_ms")
        quality_mean, quality_p10, quality_scored = _quality_figures(get("quality"))
        return WindowAggregate(
            window_start_ns=start_ns,
            window_end_ns=end_ns,
            width_s=(end_ns - start_ns) // NS_PER_S,
            series=series,
            events=self.events,
            calls=self.calls,
            errors=self.errors,
            error_rate=self.errors / self.calls if self.calls else None,
            errors_by_type=dict(self.errors_by_type),
            latency_ms=_percentiles(get("latency_ms")),
            ttft_ms=_percentiles(ttft),
            ttft_calls=0.0 if ttft is None else ttft.count,
            input_tokens=_token_stats(get("input_tokens")),
            output_tokens=_token_stats(get("output_tokens")),
            cost_usd_sum=self.cost_usd,
            cost_per_call_usd=(
                self.cost_usd / self.cost_known_calls if self.cost_known_calls else None
            ),
            cost_known_calls=self.cost_known_calls,
            cost_unknown_calls=self.cost_unknown_calls,
            quality_mean=quality_mean,
            quality_p10=quality_p10,
            quality_scored=quality_scored,
            late_events=late_events,
            sketches={name: s.encode() for name, s in self.sketches.items()},
            observed_events=dict(self.observed_events),
            latency_over_ms=dict(sorted(self.latency_over_ms.items())),
        )


def _weights(sample_rate: float | list[float], count: int) -> list[float] | None:
    """Each event's weight (None when every event stands for one call)."""
    if isinstance(sample_rate, list):
        return None if min(sample_rate) == 1.0 else [1.0 / r for r in sample_rate]
    return None if sample_rate == 1.0 else [1.0 / sample_rate] * count


def _columns_of(rows: Sequence[Sequence[Any]]) -> CallColumns:
    """Call events given as rows of :data:`CALL_FIELDS` values, by column."""
    columns = dict(zip(CALL_FIELDS, map(list, zip(*rows, strict=True)), strict=True))
    return CallColumns(len(rows), columns)


def _over(
    calls: CallColumns, weights: list[float] | None, thresholds_ms: Sequence[float]
) -> dict[float, float]:
    """The (weighted) calls slower than each threshold."""
    if not thresholds_ms:
        return {}
    values, weights = _known(calls.column("latency_ms"), weights)
    if weights is None:
        return {t: float(sum(map(float(t).__lt__, values))) for t in thresholds_ms}
    return {t: math.fsum(compress(weights, map(float(t).__lt__, values))) for t in thresholds_ms}


def _merged_counts(
    mine: dict[float, float], my_events: int, theirs: dict[float, float], their_events: int
) -> dict[float, float]:
    """Counts over thresholds of two sets of call events: a threshold only one side counted is
    kept only when the other side holds no call event (else its count would be partial)."""
    merged = {t: n + theirs[t] for t, n in mine.items() if t in theirs}
    if not their_events:
        merged |= {t: n for t, n in mine.items() if t not in theirs}
    if not my_events:
        merged |= {t: n for t, n in theirs.items() if t not in mine}
    return merged


def _known(column: list[Any], weights: list[float] | None) -> tuple[list[Any], list[float] | None]:
    """The non-None values of a column, with their weights."""
    if None not in column:
        return column, weights
    if weights is None:
        return [v for v in column if v is not None], None
    pairs = [(v, w) for v, w in zip(column, weights, strict=True) if v is not None]
    return [v for v, _ in pairs], [w for _, w in pairs]


def _percentiles(sketch: Distribution | None) -> Percentiles | None:
    if sketch is None:
        return None
    p50, p90, p95, p99 = (sketch.quantile(q) or 0.0 for q in (0.50, 0.90, 0.95, 0.99))
    return Percentiles(p50=p50, p90=p90, p95=p95, p99=p99, max=sketch.max)


def _quality_figures(sketch: Distribution | None) -> tuple[float | None, float | None, float]:
    """Mean, p10 and count of the quality scores."""
    if sketch is None:
        return None, None, 0.0
    return sketch.avg, sketch.quantile(0.10), sketch.count


def _token_stats(sketch: Distribution | None) -> TokenStats | None:
    if sketch is None:
        return None
    return TokenStats(
        sum=sketch.sum, mean=sketch.avg, p95=sketch.quantile(0.95) or 0.0, calls=sketch.count
    )


def rollup(
    windows: Sequence[WindowAggregate], start_ns: int | None = None, end_ns: int | None = None
) -> WindowAggregate:
    """Merge closed windows of one series into one window spanning them, without raw events.

    ``start_ns``/``end_ns`` give the rolled-up window's bounds (default: the earliest start and
    latest end among ``windows``); the windows must lie within them and must not overlap.
    """
    if not windows:
        raise ValueError("rollup needs at least one window")
    ordered = sorted(windows, key=attrgetter("window_start_ns"))
    series = ordered[0].series
    if any(w.series != series for w in ordered):
        raise ValueError("rollup needs windows of one series")
    if any(b.window_start_ns < a.window_end_ns for a, b in pairwise(ordered)):
        raise ValueError("rollup needs non-overlapping windows")
    start = ordered[0].window_start_ns if start_ns is None else start_ns
    end = max(w.window_end_ns for w in ordered) if end_ns is None else end_ns
    if start > ordered[0].window_start_ns or end < ordered[-1].window_end_ns:
        raise ValueError("rollup windows must lie within start_ns..end_ns")
    acc = Accumulator()
    for window in ordered:
        acc.merge(Accumulator.from_window(window))
    return acc.finish(series, start, end, sum(w.late_events for w in ordered))
