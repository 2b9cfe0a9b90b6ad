"""Late scores: a quality score counts in the window of the call it scores, however late it
comes, within ``windows.quality_lateness_s``.

A quality event carries its call's start time, so it belongs to that call's windows. While a
window is open it is aggregated as any event. A window that closes with successful calls still
unscored (more successful calls than scores: a failed call has no answer to judge) is *held*:
the worker keeps a copy of its quality sketch (empty when it has no score yet) until the
watermark passes the window's end by ``quality_lateness_s - allowed_lateness_s``, in the
stream's time until ``quality_lateness_s`` after the window's end. A window that closes with
every successful call scored costs nothing; a late score for it, or for a window without calls,
is dead-lettered (:data:`NOT_HELD`).

A score that lands in a held window changes its figures, and the worker emits a
:class:`QualityUpdate` (once the watermark enters the next base window, or before the window is
let go, so one update carries the scores of many records): the window's new quality mean, p10
and scored count, written to InfluxDB
as the same ``llm_window`` point (same measurement, tags and timestamp), so InfluxDB replaces
those three fields of the point and keeps its others. A score later than that for every width
is dead-lettered with its reason (:data:`TOO_LATE`).

The held figures and the updates not yet emitted are part of the aggregator's checkpointed
state, so a worker restarted from its checkpoint emits only updates that a run without the
restart emits, and the last update of each window carries every score.

Memory: one quality sketch per held window, at most ``windows.max_held_quality_windows`` per
partition. Beyond that the window that ends first is let go (its late scores are dead-lettered,
:data:`EVICTED`). Windows are let go in the order (end, width, start, series), so a restored run
lets the same windows go.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from promptprof_processor.ingest.validation import CallColumns
from promptprof_processor.units import NS_PER_S
from promptprof_processor.windows.figures import Accumulator, SeriesTags, WindowAggregate
from promptprof_processor.windows.series import Series
from promptprof_processor.windows.sketches import Distribution

QUALITY_UPDATE = "quality_update"
TOO_LATE = "quality score later than windows.quality_lateness_s after its call's window"
EVICTED = ("quality score for a window no longer held (windows.max_held_quality_windows reached "
           "before windows.quality_lateness_s passed)")
NOT_HELD = "quality score for a closed window without unscored successful calls"

# width (s), window start (ns), series
WindowKey = tuple[int, int, Series]
# window end (ns), then the key: the order windows are let go in
Place = tuple[int, int, int, Series]
_NOWHERE: Place = (-1, 0, 0, Series("", "", "", "", ()))


class QualityUpdate(BaseModel):
    """The quality figures of a closed window after late scores landed in it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["quality_update"] = "quality_update"
    window_start_ns: int
    window_end_ns: int
    width_s: int
    series: SeriesTags
    quality_mean: float | None
    quality_p10: float | None
    quality_scored: float

    def to_bytes(self) -> bytes:
        """orjson bytes that :meth:`from_bytes` restores exactly (they begin with the kind)."""
        return orjson.dumps(self.model_dump())

    @classmethod
    def from_bytes(cls, data: bytes) -> QualityUpdate:
        """Restore an update from :meth:`to_bytes` output."""
        return cls.model_validate(orjson.loads(data))


def is_quality_update(value: bytes) -> bool:
    """Whether a windows-topic record value holds a :class:`QualityUpdate`."""
    return value.startswith(_UPDATE_PREFIX)


_UPDATE_PREFIX = orjson.dumps({"kind": QUALITY_UPDATE})[:-1]


class LateScores:
    """The quality figures of closed windows, held for the quality lateness."""

    def __init__(self, hold_ns: int, max_held: int) -> None:
        """Hold a window's figures until the watermark passes its end by ``hold_ns`` (0: hold
        none), at most ``max_held`` windows."""
        self.hold_ns = hold_ns
        self.max_held = max_held
        self._held: dict[WindowKey, Accumulator] = {}
        self._order: list[Place] = []  # a heap of the held windows
        self._horizon: Place = _NOWHERE  # the last window let go before its time
        self._pending: dict[WindowKey, Accumulator] = {}  # landed in since the last updates()
        self._pending_keys: list[WindowKey] = []  # restored, until restored() finds them
        self._must_flush = False  # a pending window was let go: its update cannot wait
        self._dirty: set[WindowKey] = set()  # written to since the last changes()

    def __len__(self) -> int:
        """How many windows are held."""
        return len(self._held)

    def closed(self, key: WindowKey, window: WindowAggregate) -> None:
        """Window ``key`` closed as ``window``: hold its quality if it has successful calls
        without a score."""
        if not self.hold_ns or window.calls - window.errors <= window.quality_scored:
            return
        held = self._held[key] = Accumulator()
        quality = window.sketches.get("quality")
        if quality is not None:
            held.sketches["quality"] = Distribution.from_state(quality)
        heapq.heappush(self._order, _place(key))
        self._dirty.add(key)
        while len(self._held) > self.max_held:
            self._horizon = heapq.heappop(self._order)
            self._let_go(self._horizon[1:])

    def _let_go(self, key: WindowKey) -> None:
        del self._held[key]
        self._must_flush = self._must_flush or key in self._pending

    def takes(self, key: WindowKey, closed_until_ns: int) -> str | None:
        """None when closed window ``key`` takes scores, else why not."""
        if closed_until_ns >= _end(key) + self.hold_ns:
            return TOO_LATE
        if key not in self._held:
            return EVICTED if _place(key) <= self._horizon else NOT_HELD
        return None

    def land(self, key: WindowKey, scores: CallColumns) -> None:
        """Count ``scores`` (the quality fields) in held window ``key``."""
        held = self._held[key]
        held.add_quality(scores)
        self._pending[key] = held
        self._dirty.add(key)

    def updates(self, tags: Callable[[Series], SeriesTags], due: bool) -> list[QualityUpdate]:
        """The updates of the windows scores landed in since the last updates, by width, start
        and series, when ``due`` or when one of those windows was let go (else none yet);
        ``tags`` gives each series' tags."""
        if not (due or self._must_flush):
            return []
        pending, self._pending, self._must_flush = self._pending, {}, False
        return [_update(key, held, tags(key[2])) for key, held in sorted(pending.items())]

    def expire(self, closed_until_ns: int) -> None:
        """Stop holding the windows that no longer take scores."""
        order = self._order
        while order and closed_until_ns >= order[0][0] + self.hold_ns:
            self._let_go(heapq.heappop(order)[1:])

    def changes(self, everything: bool = False) -> dict[str, Any]:
        """The horizon and the held windows written to since the last call (all of them if
        ``everything``), JSON-native, for :meth:`apply`; a window let go is not listed
        (:meth:`restored` lets it go again)."""
        dirty, self._dirty = self._dirty, set()
        keys = sorted(self._held.keys() if everything else dirty & self._held.keys())
        return {"horizon": _entry(self._horizon[1:]),
                "windows": [[*_entry(key), self._held[key].to_state()] for key in keys],
                "pending": [_entry(key) for key in sorted(self._pending)]}

    def apply(self, changes: dict[str, Any]) -> None:
        """Take the horizon, held windows and pending updates of :meth:`changes` output."""
        self._horizon = _place(_key(changes["horizon"]))
        for *entry, state in changes["windows"]:
            self._held[_key(entry)] = Accumulator.from_state(state)
        self._pending_keys = [_key(entry) for entry in changes["pending"]]

    def restored(self, closed_until_ns: int) -> None:
        """After :meth:`apply`: let go of the windows let go since they were written."""
        self._held = {key: held for key, held in self._held.items()
                      if _place(key) > self._horizon}
        self._order = sorted(map(_place, self._held))
        self.expire(closed_until_ns)
        # a pending window was held when its state was taken (its update would have been due)
        self._pending = {key: self._held[key] for key in self._pending_keys if key in self._held}


def _end(key: WindowKey) -> int:
    width_s, start_ns, _ = key
    return start_ns + width_s * NS_PER_S


def _place(key: WindowKey) -> Place:
    return (_end(key), *key)


def _entry(key: WindowKey) -> list[Any]:
    width, start, series = key
    return [width, start, *series[:4], list(series.labels)]


def _key(entry: list[Any]) -> WindowKey:
    width, start, service, prompt, version, model, labels = entry
    return (width, start, Series(service, prompt, version, model, tuple(labels)))


def _update(key: WindowKey, held: Accumulator, tags: SeriesTags) -> QualityUpdate:
    width_s, start_ns, _ = key
    quality = held.sketches["quality"]  # a window is updated when a score landed in it
    return QualityUpdate(
        window_start_ns=start_ns, window_end_ns=_end(key), width_s=width_s, series=tags,
        quality_mean=quality.avg, quality_p10=quality.quantile(0.10),
        quality_scored=quality.count,
    )
