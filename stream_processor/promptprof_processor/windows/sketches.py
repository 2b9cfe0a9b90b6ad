"""DDSketch helpers: the one sketch configuration, bulk insertion and a compact codec.

Every sketch is a :class:`ddsketch.LogCollapsingLowestDenseDDSketch` with 1% relative accuracy
and at most 2048 bins (about 17 decades of values; only beyond that do the lowest bins collapse).
Sketches hold non-negative values only (latencies, token counts, quality scores).

:func:`add_values` inserts a whole column of values at once: it computes the bin keys of the
sketch's logarithmic mapping in one pass, grows the store once, and adds each distinct key's
count to its bin, which costs a fraction of calling ``DDSketch.add`` per value. It reads and
writes the sketch's internals (``_store``, ``_count``, ...); tests pin it to ``DDSketch.add``.

The codec (:func:`encode_sketch`, :func:`decode_sketch`) produces a JSON-native dict, so sketches
travel inside orjson documents (checkpoints, closed windows). Unlike ddsketch's protobuf helper,
which drops them, it keeps the exact count, sum, min and max::

    {"a": 0.01, "n": count, "s": sum, "min": min, "max": max, "z": zero_count,
     "pn": positive_store_count, "k": lowest_key, "c": collapsed, "b": [bin counts from k up]}

or, for a few values (:class:`Distribution`), the same with the bins sparse:
``"keys": [non-empty bin keys, ascending], "counts": [their counts]`` instead of ``k`` and ``b``.
Read an encoding's bins with :func:`sketch_bins` or :func:`decode_sketch`, never by its keys.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import accumulate, repeat
from math import ceil, log2
from operator import mul
from typing import Any

from ddsketch import LogCollapsingLowestDenseDDSketch
from ddsketch.store import CollapsingLowestDenseStore

RELATIVE_ACCURACY = 0.01
BIN_LIMIT = 2048

Sketch = LogCollapsingLowestDenseDDSketch
SketchData = dict[str, Any]


def new_sketch() -> Sketch:
    """An empty sketch with promptprof's accuracy and bin limit."""
    return LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)


def _store(sketch: Sketch) -> CollapsingLowestDenseStore:
    store: CollapsingLowestDenseStore = sketch._store
    return store


def add_values(sketch: Sketch, values: Sequence[float], weights: Sequence[float] | None) -> None:
    """Add non-negative values, each with its weight (all 1 when ``weights`` is None).

    The result is that of ``sketch.add(v, w)`` for each pair, up to float rounding of the
    running sum and values within a rounding error of a bin boundary.
    """
    if not values:
        return
    lowest, highest = min(values), max(values)
    if lowest < 0:
        raise ValueError("sketch values must be non-negative")
    if lowest <= sketch._mapping.min_possible:
        values, weights = _add_zeros(sketch, values, weights)
        if not values:
            return
        lowest = min(values)
    multiplier = sketch._mapping._multiplier
    keys = [ceil(log2(v) * multiplier) for v in values]
    if weights is None:
        counts: Mapping[int, float] = Counter(keys)
        total = float(len(values))
    else:
        counts = _weighted_counts(keys, weights)
        total = math.fsum(weights)
    low, high = ceil(log2(lowest) * multiplier), ceil(log2(highest) * multiplier)
    _add_counts(_store(sketch), counts, low, high, total)
    _add_summary(sketch, values, weights, lowest, highest)


def _add_counts(
    store: CollapsingLowestDenseStore,
    counts: Mapping[int, float],
    low: int,
    high: int,
    total: float,
) -> None:
    """Add bin counts for keys within low..high, growing the store once for the whole range."""
    store.add(low, 0.0)
    store.add(high, 0.0)
    if low < store.min_key:  # the store collapsed its lowest bins: let it route each key
        for key, count in counts.items():
            store.add(key, float(count))
        return
    bins, offset = store.bins, store.offset
    for key, count in counts.items():
        bins[key - offset] += count
    store.count += total


def _counts(keys: list[int]) -> dict[int, float]:
    counts: dict[int, float] = {}
    get = counts.get
    for key in keys:
        counts[key] = get(key, 0.0) + 1.0
    return counts


def _weighted_counts(keys: list[int], weights: Sequence[float]) -> dict[int, float]:
    counts: dict[int, float] = {}
    get = counts.get
    for key, weight in zip(keys, weights, strict=True):
        counts[key] = get(key, 0.0) + weight
    return counts


def _add_summary(
    sketch: Sketch,
    values: Sequence[float],
    weights: Sequence[float] | None,
    lowest: float,
    highest: float,
) -> None:
    if weights is None:
        sketch._count += float(len(values))
        sketch._sum += math.fsum(values)
    else:
        sketch._count += math.fsum(weights)
        sketch._sum += math.fsum(map(mul, values, weights))
    sketch._min = min(sketch._min, lowest)
    sketch._max = max(sketch._max, highest)


def _add_zeros(
    sketch: Sketch, values: Sequence[float], weights: Sequence[float] | None
) -> tuple[list[float], list[float] | None]:
    """Count the values too small to bin as zeros, as ``DDSketch.add`` does; return the rest."""
    tiny = sketch._mapping.min_possible
    pairs = list(zip(values, weights or [1.0] * len(values), strict=True))
    zeros = [v for v, _ in pairs if v <= tiny]
    zero_weights = [w for v, w in pairs if v <= tiny]
    sketch._zero_count += math.fsum(zero_weights)
    _add_summary(sketch, zeros, zero_weights, min(zeros), max(zeros))
    rest = [(v, w) for v, w in pairs if v > tiny]
    return [v for v, _ in rest], None if weights is None else [w for _, w in rest]


def merge_into(target: Sketch, source: Sketch) -> None:
    """Add ``source``'s values to ``target``; ``target`` is marked collapsed if either was."""
    target.merge(source)
    _store(target).is_collapsed |= _store(source).is_collapsed


def quantile(sketch: Sketch, q: float) -> float | None:
    """The value at quantile ``q`` (0..1), within 1% relative error; None when empty.

    Clamped to the exact minimum and maximum, so that no percentile exceeds the maximum.
    """
    value: float | None = sketch.get_quantile_value(q)
    if value is None:
        return None
    return float(min(max(value, sketch._min), sketch._max))


def encode_sketch(sketch: Sketch) -> SketchData:
    """A JSON-native encoding of the sketch that :func:`decode_sketch` restores exactly."""
    if sketch._negative_store.count:
        raise ValueError("sketches with negative values are not supported")
    store = _store(sketch)
    if store.count:
        bins = store.bins[store.min_key - store.offset : store.max_key - store.offset + 1]
        lowest = int(store.min_key)
    else:
        bins, lowest = [], 0
    return {
        "a": RELATIVE_ACCURACY,
        "n": sketch._count,
        "s": sketch._sum,
        "min": sketch._min if sketch._count else None,
        "max": sketch._max if sketch._count else None,
        "z": sketch._zero_count,
        "pn": store.count,
        "k": lowest,
        "c": store.is_collapsed,
        "b": bins,
    }


def decode_sketch(data: SketchData) -> Sketch:
    """Restore a sketch from :func:`encode_sketch` output."""
    if data["a"] != RELATIVE_ACCURACY:
        raise ValueError(f"sketch relative accuracy {data['a']} differs from {RELATIVE_ACCURACY}")
    sketch = new_sketch()
    lowest, bins = _dense(data)
    if bins:
        store = _store(sketch)
        store.bins = bins
        store.offset = store.min_key = lowest
        store.max_key = lowest + len(bins) - 1
        store.count = data["pn"]
        store.is_collapsed = data["c"]
    sketch._zero_count = data["z"]
    sketch._count = data["n"]
    sketch._sum = data["s"]
    if data["min"] is not None:
        sketch._min = data["min"]
        sketch._max = data["max"]
    return sketch


def sketch_bins(data: SketchData) -> list[tuple[int, float]]:
    """The (key, count) of every non-empty positive bin of an encoded sketch, by key."""
    if "keys" in data:
        return list(zip(data["keys"], map(float, data["counts"]), strict=True))
    return [(data["k"] + i, float(b)) for i, b in enumerate(data["b"]) if b]


def _dense(data: SketchData) -> tuple[int, list[float]]:
    """The lowest key and the bins from it up, of either encoding."""
    if "keys" not in data:
        return data["k"], [float(b) for b in data["b"]]
    keys = data["keys"]
    if not keys:
        return 0, []
    bins = [0.0] * (keys[-1] - keys[0] + 1)
    for key, count in zip(keys, data["counts"], strict=True):
        bins[key - keys[0]] = float(count)
    return keys[0], bins


EXACT_MAX = 256
_MAPPING = new_sketch()._mapping


class Distribution:
    """The values of one figure of one window: as given (values and weights) up to
    :data:`EXACT_MAX` values, in a sketch beyond.

    Every answer is the one the sketch of those values gives (its bins, counts, quantiles and
    encoding), computed from the values without making the sketch: a window of a few calls,
    the common case with many series, spent most of its time setting sketches up.
    """

    __slots__ = ("_bins", "_sketch", "_values", "_weights")

    def __init__(self, sketch: Sketch | None = None) -> None:
        """An empty distribution, or one holding ``sketch``."""
        self._values: list[float] = []
        self._weights: list[float] | None = None  # None: every value weighs 1
        self._sketch = sketch
        self._bins: _Bins | None = None

    def add(self, values: Sequence[float], weights: Sequence[float] | None) -> None:
        """Add non-negative values, each with its weight (all 1 when ``weights`` is None)."""
        self._bins = None
        if values and min(values) < 0:
            raise ValueError("sketch values must be non-negative")
        if self._sketch is not None or len(self._values) + len(values) > EXACT_MAX:
            add_values(self.sketch(), values, weights)
            return
        if weights is not None or self._weights is not None:
            mine = self._weights if self._weights is not None else [1.0] * len(self._values)
            self._weights = mine + (list(weights) if weights is not None else [1.0] * len(values))
        self._values += values

    def merge(self, other: Distribution) -> None:
        """Add ``other``'s values."""
        if other._sketch is None:
            self.add(other._values, other._weights)
        else:
            self._bins = None
            merge_into(self.sketch(), other._sketch)

    def sketch(self) -> Sketch:
        """The sketch of the values (made now if they were kept as given)."""
        if self._sketch is None:
            self._sketch = new_sketch()
            if self._values:
                add_values(self._sketch, self._values, self._weights)
            self._values, self._weights = [], None
        return self._sketch

    @property
    def count(self) -> float:
        """The total weight."""
        return self._sketch.count if self._sketch is not None else self.bins().count

    @property
    def sum(self) -> float:
        """The weighted sum of the values."""
        return self._sketch.sum if self._sketch is not None else self.bins().sum

    @property
    def avg(self) -> float:
        """The weighted mean."""
        return self.sum / self.count

    @property
    def max(self) -> float:
        """The largest value."""
        return self._sketch._max if self._sketch is not None else max(self._values)

    def quantile(self, q: float) -> float | None:
        """The sketch's value at quantile ``q``, clamped to the exact minimum and maximum."""
        bins = self._exact()
        return quantile(self.sketch(), q) if bins is None else bins.quantile(q)

    def encode(self) -> SketchData:
        """The :func:`encode_sketch` encoding of the values' sketch."""
        bins = self._exact()
        return encode_sketch(self.sketch()) if bins is None else bins.encode()

    def _exact(self) -> _Bins | None:
        """The bins of the values kept as given; None when they are in a sketch, or when the
        sketch would collapse its lowest bins (values over more than 17 decades)."""
        if self._sketch is not None or self.bins().span > BIN_LIMIT:
            return None
        return self.bins()

    def state(self) -> SketchData:
        """A JSON-native snapshot for :meth:`from_state` (the values as given, if kept)."""
        if self._sketch is not None:
            return encode_sketch(self._sketch)
        weights = None if self._weights is None else list(self._weights)
        return {"v": list(self._values), "w": weights}  # copies: the values go on growing

    @classmethod
    def from_state(cls, data: SketchData) -> Distribution:
        """Restore a :meth:`state` (or an :func:`encode_sketch` encoding)."""
        if "v" not in data:
            return cls(decode_sketch(data))
        restored = cls()
        restored._values = list(data["v"])
        restored._weights = None if data["w"] is None else list(data["w"])
        return restored

    def bins(self) -> _Bins:
        """The bins of the values kept as given."""
        if self._bins is None:
            self._bins = _Bins(self._values, self._weights)
        return self._bins


class _Bins:
    """The zero count and the positive bins that the sketch of some values holds."""

    def __init__(self, values: Sequence[float], weights: Sequence[float] | None) -> None:
        tiny, multiplier = _MAPPING.min_possible, _MAPPING._multiplier
        self.zeros = 0.0  # the sketch's zero count: values too small for a bin
        positive_weights: list[float] | None
        if values and min(values) <= tiny:
            pairs = list(zip(values, weights or [1.0] * len(values), strict=True))
            self.zeros = math.fsum(w for v, w in pairs if v <= tiny)
            positive, positive_weights = [v for v, _ in pairs if v > tiny], [
                w for v, w in pairs if v > tiny]
        else:
            positive, positive_weights = list(values), None if weights is None else list(weights)
        keys = list(map(ceil, map(mul, map(log2, positive), repeat(multiplier))))
        counts: Mapping[int, float] = (
            _counts(keys) if positive_weights is None else _weighted_counts(keys, positive_weights))
        self.keys = sorted(counts)
        self.counts = [float(counts[k]) for k in self.keys]
        self.positive = (float(len(positive)) if positive_weights is None
                         else math.fsum(positive_weights))
        self.count = float(len(values)) if weights is None else math.fsum(weights)
        self.sum = math.fsum(values) if weights is None else math.fsum(map(mul, values, weights))
        self.min, self.max = (min(values), max(values)) if values else (0.0, 0.0)
        self.span = self.keys[-1] - self.keys[0] + 1 if self.keys else 0
        self._running = list(accumulate(self.counts))

    def quantile(self, q: float) -> float | None:
        if not 0 <= q <= 1 or not self.count:
            return None
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return float(min(max(0, self.min), self.max))
        at = bisect_right(self._running, rank - self.zeros)  # the first bin reaching past it
        key = self.keys[min(at, len(self.keys) - 1)] if self.keys else 0
        return float(min(max(_MAPPING.value(key), self.min), self.max))

    def encode(self) -> SketchData:
        """The sketch's encoding with its bins sparse: a few values spread over a wide range
        would otherwise travel as hundreds of empty bins."""
        return {
            "a": RELATIVE_ACCURACY, "n": self.count, "s": self.sum,
            "min": self.min if self.count else None, "max": self.max if self.count else None,
            "z": self.zeros, "pn": self.positive, "c": False, "keys": self.keys,
            "counts": self.counts,
        }
