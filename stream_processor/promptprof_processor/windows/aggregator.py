"""Event-time tumbling windows closed by a watermark, with checkpointable state.

Windows of every configured width are aligned to the Unix epoch. Internally events are
aggregated once, into *base* windows whose width is the greatest common divisor of the configured
widths; a window of width w is the merge of its base windows when it closes. So each event costs
one update however many widths are configured.

Watermark and lateness. By default the watermark is the maximum event time seen minus the allowed
lateness; the caller may pass its own to :meth:`WindowAggregator.advance` (the minimum over
partitions, or one capped by the wall clock so that a producer with a clock far in the future
cannot close every window early). A window ``[start, end)`` closes, and is returned once, when
the watermark reaches ``end``. An event whose window of some width has already closed is *late*
for that width: it still counts in the widths whose window is open, and it is counted in the
``late_events`` of the series' currently open window of the late width (the window containing
the closed-until time). An event late for every width is dropped from the figures and counted
in :attr:`AggregatorStats.dropped_events`.

A quality score is late only when it is later than ``quality_lateness_s``: until then it lands in
the closed window of the call it scores (:mod:`promptprof_processor.windows.late_scores`), and
:meth:`WindowAggregator.quality_updates` gives the windows' new quality figures.

Rollups. A width of ``rollup_widths_s`` (e.g. 3600 s) is not kept as base windows: each closed
window of its source width (the largest configured width dividing it) is merged, sketches bin for
bin, into one open accumulator per series and rollup window, which closes when the watermark
reaches its end. So a rolled-up window holds exactly the calls of the source windows it spans
(events late for the source width are late for it too, counted in its ``late_events``), and an
open hour costs one accumulator per series in the checkpoint instead of 360 of 10 s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import compress, repeat
from operator import attrgetter, eq, itemgetter
from typing import Any, TypeVar, cast

from promptprof_processor.ingest.validation import CallColumns, CallRecord, Record
from promptprof_processor.settings import WindowSettings
from promptprof_processor.units import NS_PER_S
from promptprof_processor.windows.figures import (
    CALL_FIELDS,
    FOLD_ROWS,
    QUALITY_FIELDS,
    Accumulator,
    SeriesTags,
    WindowAggregate,
)
from promptprof_processor.windows.late_scores import (
    EVICTED,
    NOT_HELD,
    TOO_LATE,
    LateScores,
    QualityUpdate,
)
from promptprof_processor.windows.series import Prompt, Series, SeriesRegistry

STATE_FORMAT = 1

T = TypeVar("T")
K = TypeVar("K")
FEW_KEYS = 8
# (service, prompt id, version, model), label values (a string for one dimension), base start
GroupKey = tuple[tuple[str, str, str, str], Any, int]
RollupKey = tuple[int, int]  # (rollup width in s, window start in ns)

_IDENTITY = ("service", "prompt_id", "prompt_version", "request_model")
_CALL_ROW_FIELDS = (*_IDENTITY, "start_time_unix_nano", "labels", *CALL_FIELDS)
# why a score no window takes was refused, when its widths say different things: the likeliest
# to need action last
_REFUSALS = (TOO_LATE, NOT_HELD, EVICTED)
_QUALITY_ROW_FIELDS = (*_IDENTITY, "start_time_unix_nano", "labels", *QUALITY_FIELDS)


class StateError(ValueError):
    """Checkpointed state that cannot be restored under the given settings."""


@dataclass
class AggregatorStats:
    """Running counts of what the aggregator received."""

    events: int = 0
    late_events: int = 0
    dropped_events: int = 0
    scores_landed_late: int = 0  # quality scores counted in a window closed before they came


class WindowAggregator:
    """Aggregates validated events into per-series tumbling windows of every configured width."""

    def __init__(self, settings: WindowSettings) -> None:
        """An aggregator with no state, configured by the ``windows`` settings section."""
        self.settings = settings
        self.stats = AggregatorStats()
        self._widths = [(w, w * NS_PER_S) for w in settings.widths_s]
        self._base_ns = math.gcd(*settings.widths_s) * NS_PER_S
        self._dims = tuple(settings.label_dimensions)
        self._label_defaults = dict.fromkeys(self._dims, "")
        self._label_getter: Callable[[dict[str, str]], Any] = (
            itemgetter(*self._dims) if self._dims else _no_dimensions
        )
        self._registry = SeriesRegistry(self._dims, settings.max_series_per_prompt)
        self._bases: dict[int, dict[Series, Accumulator]] = {}
        self._closed_until_ns = 0
        self._max_event_ns = 0
        self._dirty: set[tuple[int, Series]] = set()
        self.late_scores = LateScores(settings.quality_hold_ns, settings.max_held_quality_windows)
        self._entered_base = False  # the last advance entered a new base window
        self._rollup_widths = [(w, w * NS_PER_S, settings.rollup_source(w))
                               for w in settings.rollup_widths_s]
        # (rollup width, window start) -> series -> the merged source windows so far
        self._rollups: dict[RollupKey, dict[Series, Accumulator]] = {}
        self._dirty_rollups: set[tuple[RollupKey, Series]] = set()

    @property
    def watermark_ns(self) -> int:
        """The default watermark: the latest event time seen minus the allowed lateness."""
        return self._max_event_ns - self.settings.allowed_lateness_ns

    @property
    def closed_until_ns(self) -> int:
        """Every window ending at or before this time has been closed."""
        return self._closed_until_ns

    @property
    def overflow_events(self) -> dict[Prompt, int]:
        """Events routed to an overflow series, by (service, prompt id), since the start."""
        return dict(self._registry.overflow_events)

    @property
    def open_accumulators(self) -> int:
        """Open (base window, series) accumulators: about what a window's end closes at once."""
        return sum(map(len, self._bases.values()))

    @property
    def open_series(self) -> int:
        """Distinct series with a window still open."""
        return len({series for accumulators in self._bases.values() for series in accumulators})

    def add(self, events: Sequence[Record]) -> list[tuple[Record, str]]:
        """Aggregate a batch of validated records (any order, any series, any mix of kinds);
        return the quality events no window of their call takes any more (not aggregated), each
        with the reason."""
        if not events:
            return []
        calls = [e for e in events if "kind" not in e]
        quality = [e for e in events if "kind" in e] if len(calls) < len(events) else []
        if calls:
            self.add_columns(CallColumns.of_records(calls, _CALL_ROW_FIELDS))
        if not quality:
            return []
        self.stats.events += len(quality)
        dropped = self._add_quality(
            CallColumns.of_records(cast(list[CallRecord], quality), _QUALITY_ROW_FIELDS))
        return [(quality[i], reason) for indices, reason in dropped for i in indices]

    def add_columns(self, calls: CallColumns) -> None:
        """Aggregate validated call events given by column (any order, any series)."""
        if not calls.count:
            return
        self.stats.events += calls.count
        thresholds = self.settings.latency_thresholds_ms
        rows: list[tuple[Any, ...]] | None = None
        for series, base, indices in self._grouped(calls):
            acc = self._accumulator(base, series)
            if len(indices) >= FOLD_ROWS:  # many calls of one series: by column at once
                acc.add_calls(calls.select(indices, CALL_FIELDS), thresholds)
                continue
            if rows is None:
                rows = list(zip(*map(calls.column, CALL_FIELDS), strict=True))
            acc.add_rows(rows if len(indices) == calls.count else [rows[i] for i in indices],
                         thresholds)

    def _add_quality(self, scores: CallColumns) -> list[tuple[list[int], str]]:
        """Aggregate quality scores (one for a closed window lands in it where it is held);
        return the indices of those no window takes, by reason."""
        dropped = []
        for series, base, indices in self._resolved(scores):
            part = scores.select(indices, QUALITY_FIELDS)
            closed = self._closed_widths(base)
            missed, reason = self._land(series, base, closed, part) if closed else ([], TOO_LATE)
            if not self._count_late(series, len(indices), missed):
                dropped.append((indices, reason))
            elif len(closed) < len(self._widths):
                self._accumulator(base, series).add_quality(part)
        return dropped

    def _grouped(self, events: CallColumns) -> Iterator[tuple[Series, int, list[int]]]:
        """(series, base window start, event indices) of the events to aggregate (late ones
        are counted, and those late for every width left out)."""
        for series, base, indices in self._resolved(events):
            if self._count_late(series, len(indices), self._closed_widths(base)):
                yield series, base, indices

    def _resolved(self, events: CallColumns) -> Iterator[tuple[Series, int, list[int]]]:
        """(series, base window start, event indices) of every group of events."""
        times = events.column("start_time_unix_nano")
        self._max_event_ns = max(self._max_event_ns, max(times))
        for key, indices in self._group(events, times).items():
            identity, labels, base = key
            labels = labels if type(labels) is tuple else (labels,)
            yield self._registry.resolve(Series(*identity, labels), base, len(indices)), base, \
                indices

    def _group(self, events: CallColumns, times: list[int]) -> dict[GroupKey, list[int]]:
        """Event indices by (identity, label values, base window start)."""
        base, count = self._base_ns, events.count
        fields = events.fields
        labels = self._label_keys(fields["labels"], count)
        earliest, latest = min(times), max(times)
        start = earliest - earliest % base
        identity = tuple(fields[name] for name in _IDENTITY)
        if latest - latest % base == start and list not in map(type, identity):
            # the usual envelope: one identity, one base window, perhaps a few label values
            everyone = list(range(count))
            if type(labels) is not list:
                return {(identity, labels, start): everyone}
            return {(identity, lab, start): part for lab, part in _split(everyone, labels).items()}
        ids = list(zip(*(events.column(name) for name in _IDENTITY), strict=True))
        if type(labels) is not list:
            labels = [labels] * count
        keys = list(zip(ids, labels, [t - t % base for t in times], strict=True))
        return _split(list(range(count)), keys)

    def _label_keys(self, labels: dict[str, str] | list[dict[str, str]], count: int) -> Any:
        """The label values of every event (one key when ``labels`` is shared), each a string
        for one dimension, else a tuple."""
        if not self._dims:
            return ()
        get = self._label_getter
        if not isinstance(labels, list):
            return get({**self._label_defaults, **labels})
        try:
            return list(map(get, labels))
        except KeyError:  # some event lacks a label: fill in empty values
            return [get({**self._label_defaults, **e}) for e in labels]

    def _closed_widths(self, base: int) -> list[int]:
        """The widths whose window holding base window ``base`` has closed."""
        if base + self._base_ns > self._closed_until_ns:  # every window holding it ends later
            return []
        return [w for w, w_ns in self._widths if base - base % w_ns + w_ns <= self._closed_until_ns]

    def _land(
        self, series: Series, base: int, closed: list[int], scores: CallColumns
    ) -> tuple[list[int], str]:
        """Land ``scores`` in the windows of the ``closed`` widths that take them; return the
        widths whose window does not, and the reason to give if none does."""
        missed, reasons = [], []
        for width in closed:
            key = (width, base - base % (width * NS_PER_S), series)
            refused = self.late_scores.takes(key, self._closed_until_ns)
            if refused is None:
                self.late_scores.land(key, scores)
            else:
                missed.append(width)
                reasons.append(refused)
        if len(missed) < len(closed):
            self.stats.scores_landed_late += scores.count
        return missed, max(reasons, key=_REFUSALS.index, default=TOO_LATE)

    def _count_late(self, series: Series, events: int, late: list[int]) -> bool:
        """Count events in the ``late`` widths, whose figures they are not in; False (and
        counted as dropped) when that is every width."""
        if not late:
            return True
        self.stats.late_events += events
        now = self._closed_until_ns
        acc = self._accumulator(now - now % self._base_ns, series)
        for width in late:
            acc.add_late(width, events)
        if len(late) < len(self._widths):
            return True
        self.stats.dropped_events += events
        return False

    def _accumulator(self, base: int, series: Series) -> Accumulator:
        accumulators = self._bases.setdefault(base, {})
        acc = accumulators.get(series)
        if acc is None:
            acc = accumulators[series] = Accumulator()
        self._dirty.add((base, series))
        return acc

    def advance(self, watermark_ns: int | None = None) -> list[WindowAggregate]:
        """Close every window ending at or before the watermark; return their aggregates.

        ``watermark_ns`` defaults to :attr:`watermark_ns`. A watermark at or below
        :attr:`closed_until_ns` closes nothing. Output is ordered by width, start, series.
        """
        watermark = self.watermark_ns if watermark_ns is None else watermark_ns
        if watermark <= self._closed_until_ns:
            return []
        self._entered_base = watermark // self._base_ns != self._closed_until_ns // self._base_ns
        closed: list[WindowAggregate] = []
        for width, width_ns in self._widths:
            starts = {b - b % width_ns for b in self._bases}
            for start in sorted(starts):
                if self._closed_until_ns < start + width_ns <= watermark:
                    closed.extend(self._close(width, start, start + width_ns))
        rolled = self._close_rollups(watermark)
        if rolled:
            closed = sorted([*closed, *rolled], key=attrgetter("width_s", "window_start_ns"))
        self._closed_until_ns = watermark
        for base in [b for b in self._bases if self._last_end(b) <= watermark]:
            del self._bases[base]
        self._registry.expire(watermark - max(width_ns for _, width_ns in self._widths))
        self.late_scores.expire(watermark)
        return closed

    def quality_updates(self) -> list[QualityUpdate]:
        """The new quality figures of the closed windows scores landed in since the last
        updates (by width, start, series), when the last :meth:`advance` entered a new base
        window or let such a window go; else none yet. Call it after every advance."""
        due, self._entered_base = self._entered_base, False
        return self.late_scores.updates(self._tags, due)

    def _last_end(self, base: int) -> int:
        return max(base - base % width_ns + width_ns for _, width_ns in self._widths)

    def _close(self, width: int, start: int, end: int) -> list[WindowAggregate]:
        by_series: dict[Series, list[Accumulator]] = {}
        for base, accumulators in sorted(self._bases.items()):  # sums in one order, restored or not
            if start <= base < end:
                for series, acc in accumulators.items():
                    by_series.setdefault(series, []).append(acc)
        closed = []
        for series in sorted(by_series):
            parts = by_series[series]
            late = sum(acc.late_by_width.get(width, 0) for acc in parts)
            acc = parts[0] if len(parts) == 1 else _merged(parts)
            if acc.events or acc.sketches or late:
                window = acc.finish(self._tags(series), start, end, late)
                self.late_scores.closed((width, start, series), window)
                closed.append(window)
                self._roll_up(width, start, series, acc)
        return closed

    def _roll_up(self, width: int, start: int, series: Series, acc: Accumulator) -> None:
        """Merge a closed window of ``width`` into the open rollups it is the source of."""
        for rollup, rollup_ns, source in self._rollup_widths:
            if source == width:
                key = (rollup, start - start % rollup_ns)
                accumulators = self._rollups.setdefault(key, {})
                target = accumulators.get(series)
                if target is None:
                    target = accumulators[series] = Accumulator()
                target.merge(acc)
                self._dirty_rollups.add((key, series))

    def _close_rollups(self, watermark: int) -> list[WindowAggregate]:
        """Close the rollup windows ending at or before ``watermark``."""
        closed = []
        for key in sorted(k for k in self._rollups if k[1] + k[0] * NS_PER_S <= watermark):
            width, start = key
            source = self.settings.rollup_source(width)
            for series, acc in sorted(self._rollups.pop(key).items()):
                late = acc.late_by_width.get(source, 0)
                closed.append(acc.finish(self._tags(series), start, start + width * NS_PER_S,
                                         late))
        return closed

    def _tags(self, series: Series) -> SeriesTags:
        return SeriesTags(
            service=series.service,
            prompt_id=series.prompt_id,
            prompt_version=series.prompt_version,
            model=series.model,
            labels=series.label_tags(self._dims),
        )

    def changes(self) -> dict[str, Any]:
        """What changed since the last :meth:`changes` (or :meth:`snapshot`): the counters, the
        accumulators written to since, and the registry's changed prompts, JSON-native.

        Fed in order to :meth:`from_changes` after a :meth:`snapshot`, they rebuild this state.
        An accumulator whose windows have all closed is not deleted here; :meth:`from_changes`
        drops it by the restored ``closed_until_ns``.
        """
        dirty, self._dirty = self._dirty, set()
        rolled, self._dirty_rollups = self._dirty_rollups, set()
        return self._state([(base, s) for base, s in dirty if base in self._bases],
                           [(key, s) for key, s in rolled if key in self._rollups],
                           self._registry.changes(), self.late_scores.changes())

    def snapshot(self) -> dict[str, Any]:
        """The whole state in the form of :meth:`changes`; clears what changed."""
        self._dirty, self._dirty_rollups = set(), set()
        self._registry.changes()
        keys = [(base, s) for base, accs in self._bases.items() for s in accs]
        rolled = [(key, s) for key, accs in self._rollups.items() for s in accs]
        return self._state(keys, rolled, self._registry.snapshot(),
                           self.late_scores.changes(True))

    def _state(
        self, keys: list[tuple[int, Series]], rolled: list[tuple[RollupKey, Series]],
        registry: list[list[Any]], late_scores: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "widths_s": self.settings.widths_s,
            "label_dimensions": self.settings.label_dimensions,
            "closed_until_ns": self._closed_until_ns,
            "max_event_ns": self._max_event_ns,
            "stats": asdict(self.stats),
            "windows": [[base, *s[:4], list(s.labels), self._bases[base][s].to_state()]
                        for base, s in keys],
            "rollups": [[*key, *s[:4], list(s.labels), self._rollups[key][s].to_state()]
                        for key, s in rolled],
            "registry": registry,
            "late_scores": late_scores,
        }

    @classmethod
    def from_changes(
        cls, changes: Iterable[dict[str, Any]], settings: WindowSettings
    ) -> WindowAggregator:
        """Rebuild an aggregator from a :meth:`snapshot` and the :meth:`changes` after it.

        Raises :class:`StateError` when the state has another format, or was written with other
        window widths or label dimensions (its windows and series would not fit). Rollups of a
        width no longer configured are left out; a rollup width configured since starts with
        the next source window that closes (its first window holds only the calls from then on).
        """
        agg = cls(settings)
        for state in changes:
            agg._apply(state)
        agg._bases = {
            base: accs for base, accs in agg._bases.items()
            if agg._last_end(base) > agg._closed_until_ns
        }
        agg.late_scores.restored(agg._closed_until_ns)
        agg._rollups = {
            key: accs for key, accs in agg._rollups.items()
            if key[1] + key[0] * NS_PER_S > agg._closed_until_ns
        }
        return agg

    def _apply(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise StateError(f"unknown aggregator state format {state.get('format')!r}")
        if (state["widths_s"], state["label_dimensions"]) != (
            self.settings.widths_s,
            self.settings.label_dimensions,
        ):
            raise StateError("state was written with other window widths or label dimensions")
        self._closed_until_ns = state["closed_until_ns"]
        self._max_event_ns = state["max_event_ns"]
        self.stats = AggregatorStats(**state["stats"])
        for base, s, p, v, m, labels, acc in state["windows"]:
            accs = self._bases.setdefault(base, {})
            accs[Series(s, p, v, m, tuple(labels))] = Accumulator.from_state(acc)
        configured = set(self.settings.rollup_widths_s)
        for width, start, s, p, v, m, labels, acc in state.get("rollups", ()):
            if width in configured:
                accs = self._rollups.setdefault((width, start), {})
                accs[Series(s, p, v, m, tuple(labels))] = Accumulator.from_state(acc)
        self._registry.apply(state["registry"])
        if "late_scores" in state:  # not in states of earlier versions
            self.late_scores.apply(state["late_scores"])


def _split(items: list[T], keys: list[K]) -> dict[K, list[T]]:
    """Items by key (``keys[i]`` is the key of ``items[i]``), in first-seen order of the keys."""
    distinct = dict.fromkeys(keys)
    if len(distinct) == 1:
        return {keys[0]: items}
    if len(distinct) <= FEW_KEYS:  # one C-level pass per key beats a Python loop per item
        return {key: list(compress(items, map(eq, keys, repeat(key)))) for key in distinct}
    groups: defaultdict[K, list[T]] = defaultdict(list)
    for key, item in zip(keys, items, strict=True):
        groups[key].append(item)
    return groups


def _no_dimensions(labels: dict[str, str]) -> tuple[()]:
    return ()


def _merged(parts: list[Accumulator]) -> Accumulator:
    acc = Accumulator()
    for part in parts:
        acc.merge(part)
    return acc
