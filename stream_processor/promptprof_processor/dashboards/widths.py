"""Which window width a panel reads, chosen from Grafana's time range (``$__range_s``).

A panel never averages percentiles: it plots each window's own percentile, of one series (a
line per full series: prompt, version, model, labels), so every point is a percentile of the
calls of that window within the sketch's error. Reading every 10 s window over 30 days would be
259,200 points per series, so the width is the finest one giving at most :data:`MAX_POINTS`
windows per series over the range (the coarsest beyond): with the default widths 10 s up to
4 h 10 min, 60 s up to 25 h, 3600 s beyond.

The choice is made inside InfluxQL: ``$__range_s`` becomes a number, and InfluxQL folds a
comparison of two numbers into true or false, so of the conditions
``("width" = '10s' AND 3600 <= 15000) OR ("width" = '60s' AND 3600 > 15000 AND ...)`` exactly
one holds (checked against InfluxDB 1.x in ``tests/dashboards``). Counts and sums read the same
width and group by it (``GROUP BY time(<width>)``), so a rate is a window's calls over its width.

With retention per width (``retention.enabled``), each width is read from its retention policy:
a query of the chosen width lists every policy's measurement in its ``FROM`` (InfluxQL merges
them; the width condition picks one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from promptprof_processor.settings import ProcessorSettings, WindowSettings

MAX_POINTS = 1500
RANGE = "$__range_s"


def width_tag(width_s: int) -> str:
    """The ``width`` tag value of a width in seconds (``10`` -> ``10s``)."""
    return f"{width_s}s"


def range_bounds(widths_s: Sequence[int], width_s: int) -> tuple[int | None, int | None]:
    """The range (seconds, exclusive low, inclusive high; None: unbounded) over which a panel
    reads ``width_s``."""
    ordered = sorted(widths_s)
    index = ordered.index(width_s)
    low = MAX_POINTS * ordered[index - 1] if index > 0 else None
    high = MAX_POINTS * width_s if index < len(ordered) - 1 else None
    return low, high


def chosen_width(widths_s: Sequence[int], range_s: int) -> int:
    """The width read over a range of ``range_s`` seconds."""
    for width in sorted(widths_s):
        low, high = range_bounds(widths_s, width)
        if (low is None or range_s > low) and (high is None or range_s <= high):
            return width
    raise ValueError("no widths")


def guard(widths_s: Sequence[int], width_s: int) -> str:
    """The condition that ``width_s`` is the width read over the dashboard's range."""
    low, high = range_bounds(widths_s, width_s)
    conditions = [f"\"width\" = '{width_tag(width_s)}'"]
    if low is not None:
        conditions.append(f"{RANGE} > {low}")
    if high is not None:
        conditions.append(f"{RANGE} <= {high}")
    return " AND ".join(conditions)


def any_width(widths_s: Sequence[int]) -> str:
    """One condition selecting the chosen width's windows, for queries that need not know it."""
    return "(" + " OR ".join(f"({guard(widths_s, w)})" for w in sorted(widths_s)) + ")"


@dataclass(frozen=True)
class WindowLayout:
    """The widths the workers write and the retention policy each is kept in (none: the
    database's default policy)."""

    widths_s: tuple[int, ...]
    policies: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: ProcessorSettings) -> WindowLayout:
        """The layout the workers of ``settings`` write."""
        widths = settings.windows.all_widths_s
        return cls(tuple(widths), settings.retention.policies(widths))

    def source(self, measurement: str, width_s: int | None = None) -> str:
        """The ``FROM`` sources of ``measurement``: of one width, or of any width."""
        if not self.policies:
            return f'"{measurement}"'
        widths = self.widths_s if width_s is None else (width_s,)
        return ", ".join(f'"{self.policies[w]}"."{measurement}"' for w in sorted(widths))

    def chosen(self) -> str:
        """The condition selecting the windows of the width chosen for the range."""
        return any_width(self.widths_s)

    def per_width(self, query: str, measurement: str, alias: str | None = None,
                  ) -> list[tuple[str, str | None]]:
        """``(query, alias)`` for each width: in ``query``, ``{source}`` becomes the width's
        source of ``measurement``, ``{width}`` its guard, ``{w}`` its seconds; only the width
        chosen for the range returns rows."""
        return [(query.format(source=self.source(measurement, w), width=guard(self.widths_s, w),
                              w=w), alias)
                for w in sorted(self.widths_s)]


#: The layout of the default settings: the committed dashboards'.
DEFAULT_LAYOUT = WindowLayout(tuple(WindowSettings().all_widths_s))
