"""Late scores: a quality score counts in the window of the call it scores, however late it
comes, within ``windows.quality_lateness_s``.

A quality event carries its call's start time, so it belongs to that call's windows. While a
window is open it is aggregated as any event. Once a window has closed, the worker still holds
its quality figures (the sketch of its scores, copied when it closed, or an empty one when the
first score comes late) until the watermark passes the window's end by ``quality_lateness_s -
allowed_lateness_s``: in the stream's time, until ``quality_lateness_s`` after the window's end.
A score that lands in a held window changes its figures, and the worker emits a
:class:`QualityUpdate`: the window's new quality mean, p10 and scored count, written to InfluxDB
as the same ``llm_window`` point (same measurement, tags and timestamp), so InfluxDB replaces
those three fields of the point and keeps its others. A score later than that for every width
is dead-lettered with its reason (:data:`TOO_LATE`).

The held figures are part of the aggregator's checkpointed state, so a worker restarted from its
checkpoint emits the same updates again, in the same order, the last one with every score.
Memory: one quality sketch per window with scores closed in the last ``quality_lateness_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from promptprof_processor.ingest.validation import CallColumns
from promptprof_processor.units import NS_PER_S
from promptprof_processor.windows.figures import Accumulator, SeriesTags
from promptprof_processor.windows.series import Series
from promptprof_processor.windows.sketches import Distribution

QUALITY_UPDATE = "quality_update"
TOO_LATE = "quality score later than windows.quality_lateness_s after its call's window"

# width (s), window start (ns), series
WindowKey = tuple[int, int, Series]


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

    def __init__(self, hold_ns: int) -> None:
        """Hold a window's figures until the watermark passes its end by ``hold_ns``
        (0: hold none)."""
        self.hold_ns = hold_ns
        self._held: dict[WindowKey, Accumulator] = {}
        self._pending: dict[WindowKey, Accumulator] = {}  # landed in since the last updates()
        self._dirty: set[WindowKey] = set()  # written to since the last changes()

    def __len__(self) -> int:
        """How many windows are held."""
        return len(self._held)

    def closed(self, key: WindowKey, quality: Distribution | None) -> None:
        """Window ``key`` closed with the scores ``quality`` (None: no scores)."""
        if quality is None or not self.hold_ns:
            return
        held = self._held[key] = Accumulator()
        held.sketches["quality"] = Distribution.from_state(quality.state())  # a copy
        self._dirty.add(key)

    def holds(self, end_ns: int, closed_until_ns: int) -> bool:
        """Whether a closed window ending at ``end_ns`` still takes scores."""
        return closed_until_ns < end_ns + self.hold_ns

    def land(self, key: WindowKey, scores: CallColumns) -> None:
        """Count ``scores`` (the quality fields) in held window ``key``."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = Accumulator()
        held.add_quality(scores)
        self._pending[key] = held
        self._dirty.add(key)

    def updates(self, tags: Callable[[Series], SeriesTags]) -> list[QualityUpdate]:
        """The updates of the windows scores landed in since the last call, by width, start
        and series; ``tags`` gives each series' tags."""
        pending, self._pending = self._pending, {}
        return [_update(key, held, tags(key[2])) for key, held in sorted(pending.items())]

    def expire(self, closed_until_ns: int) -> None:
        """Stop holding the windows that no longer take scores."""
        for key in [k for k in self._held if not self._takes(k, closed_until_ns)]:
            del self._held[key]

    def _takes(self, key: WindowKey, closed_until_ns: int) -> bool:
        width_s, start_ns, _ = key
        return self.holds(start_ns + width_s * NS_PER_S, closed_until_ns)

    def changes(self, everything: bool = False) -> list[list[Any]]:
        """The held windows written to since the last call (all of them if ``everything``),
        JSON-native, for :meth:`apply`; an expired window is not listed (:meth:`apply`'s
        caller expires it)."""
        dirty, self._dirty = self._dirty, set()
        keys = self._held.keys() if everything else dirty & self._held.keys()
        return [[width, start, *series[:4], list(series.labels), self._held[width, start, series]
                 .to_state()] for width, start, series in keys]

    def apply(self, entries: list[list[Any]]) -> None:
        """Take held windows from :meth:`changes` output."""
        for width, start, service, prompt, version, model, labels, state in entries:
            key = (width, start, Series(service, prompt, version, model, tuple(labels)))
            self._held[key] = Accumulator.from_state(state)


def _update(key: WindowKey, held: Accumulator, tags: SeriesTags) -> QualityUpdate:
    width_s, start_ns, _ = key
    end_ns = start_ns + width_s * NS_PER_S
    figures = held.finish(tags, start_ns, end_ns, 0)
    return QualityUpdate(
        window_start_ns=start_ns, window_end_ns=end_ns, width_s=width_s, series=tags,
        quality_mean=figures.quality_mean, quality_p10=figures.quality_p10,
        quality_scored=figures.quality_scored,
    )
