"""Robust baselines of one figure of one series: a centre and a spread that outliers barely move.

- :class:`MedianMad`: the median of the last ``size`` values and 1.4826 times their median
  absolute deviation (a standard deviation for normal noise). Half the history must change
  before the centre follows, so a burst of a few windows does not become the new normal.
- :class:`Ewma`: exponentially weighted level and mean absolute deviation (alpha = 2 / (size +
  1)), started from the median and MAD of its first values. A value beyond three spreads of the
  level moves the level by a bounded step (as if it were three spreads away, Huber) and leaves
  the spread alone, so outliers neither drag the level nor widen the spread.

Both turn into JSON-native state (:meth:`to_state`) for checkpoints, and copy through it.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import sub
from typing import Any, Literal, Protocol

MAD_TO_SD = 1.4826
MEAN_ABS_TO_SD = 1.2533
HUBER_CLAMP = 3.0
EWMA_START = 8

Method = Literal["mad", "ewma"]


class Baseline(Protocol):
    """The running centre and spread of one figure."""

    @property
    def count(self) -> int:
        """How many values it has learned from."""

    def add(self, value: float) -> None:
        """Learn from one more value."""

    def spread(self) -> tuple[float, float]:
        """The centre and the spread (a robust standard deviation); needs ``count >= 1``."""

    def mean(self) -> float:
        """The mean of what it remembers (for a rate: the usual proportion, which the median of
        sparse windows, mostly zero, understates); needs ``count >= 1``."""

    def to_state(self) -> Any:
        """JSON-native state for :func:`make_baseline`."""


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def pack(values: Iterable[float]) -> str:
    """Floats as base64 of little-endian IEEE doubles: exact, and about half the size of JSON."""
    packed = array("d", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def unpack(text: str) -> array[float]:
    """The floats of :func:`pack` output."""
    packed = array("d", base64.b64decode(text, validate=True))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed


def median_mad(values: Sequence[float]) -> tuple[float, float]:
    """The median of ``values`` (not empty) and their MAD-based standard deviation."""
    ordered = sorted(values)
    center = _median(ordered)
    deviations = sorted(map(abs, map(sub, ordered, repeat(center))))
    return center, MAD_TO_SD * _median(deviations)


class MedianMad:
    """Median and MAD of a rolling history of ``size`` values."""

    __slots__ = ("_cached", "history")

    def __init__(self, size: int, history: Sequence[float] | str = ()) -> None:
        """A baseline remembering the last ``size`` values (seeded with ``history``: values,
        or :meth:`to_state` output)."""
        if isinstance(history, str):
            history = unpack(history)
        self.history: deque[float] = deque(history, maxlen=size)
        self._cached: tuple[float, float] | None = None

    @property
    def count(self) -> int:
        """Values in the history."""
        return len(self.history)

    def add(self, value: float) -> None:
        """Append a value (the oldest falls out when full)."""
        self.history.append(value)
        self._cached = None

    def spread(self) -> tuple[float, float]:
        """Median and MAD-based standard deviation of the history."""
        if self._cached is None:
            self._cached = median_mad(self.history)
        return self._cached

    def mean(self) -> float:
        """The mean of the history."""
        return math.fsum(self.history) / len(self.history)

    def to_state(self) -> str:
        """The history, oldest first, as base64 of little-endian doubles (exact, compact)."""
        return pack(self.history)


class Ewma:
    """Robust exponentially weighted level and mean absolute deviation."""

    __slots__ = ("_alpha", "_count", "_deviation", "_level", "_start")

    def __init__(self, size: int, state: Sequence[Any] | None = None) -> None:
        """A baseline with the memory of about ``size`` values, restored from ``state``."""
        self._alpha = 2.0 / (size + 1)
        count, level, deviation, start = state or (0, 0.0, 0.0, [])
        self._count: int = int(count)
        self._level: float = float(level)
        self._deviation: float = float(deviation)
        self._start: list[float] = [float(v) for v in start]

    @property
    def count(self) -> int:
        """Values learned from."""
        return self._count

    def add(self, value: float) -> None:
        """Learn from one value: collected until :data:`EWMA_START`, then a clamped update."""
        self._count += 1
        if self._start or self._count == 1:
            self._start.append(value)
            if len(self._start) >= EWMA_START:
                self._level, sd = median_mad(self._start)
                self._deviation = sd / MEAN_ABS_TO_SD
                self._start = []
            return
        bound = HUBER_CLAMP * MEAN_ABS_TO_SD * self._deviation
        change = value - self._level
        if bound and abs(change) > bound:  # an outlier: a bounded step, the spread unchanged
            self._level += self._alpha * math.copysign(bound, change)
            return
        self._level += self._alpha * change
        self._deviation += self._alpha * (abs(change) - self._deviation)

    def spread(self) -> tuple[float, float]:
        """The level and the mean absolute deviation as a standard deviation."""
        if self._start:
            return median_mad(self._start)
        return self._level, self._deviation * MEAN_ABS_TO_SD

    def mean(self) -> float:
        """The level (a clamped running mean)."""
        if self._start:
            return math.fsum(self._start) / len(self._start)
        return self._level

    def to_state(self) -> list[Any]:
        """``[count, level, mean absolute deviation, start values]``."""
        return [self._count, self._level, self._deviation, list(self._start)]


def make_baseline(method: Method, size: int, state: Any = None) -> Baseline:
    """A baseline of ``method`` remembering about ``size`` values, from ``to_state`` output."""
    if method == "ewma":
        return Ewma(size, state)
    return MedianMad(size, state or ())
