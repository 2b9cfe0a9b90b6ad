"""A late quality score lands in the series of the call it scores, labels included."""

from __future__ import annotations

from promptprof_processor.settings import WindowSettings
from promptprof_processor.windows.aggregator import WindowAggregator

from .factories import call, ns, quality


def test_quality_event_joins_its_labelled_series() -> None:
    agg = WindowAggregator(WindowSettings(widths_s=[10], label_dimensions=["tenant"]))
    agg.add([call(1, labels={"tenant": "acme"}), call(2, labels={"tenant": "zeta"})])
    agg.add([quality(1, 0.9, labels={"tenant": "acme"})])
    windows = {w.series.labels.get("tenant"): w for w in agg.advance(ns(10))}
    assert set(windows) == {"acme", "zeta"}
    assert windows["acme"].quality_scored == 1 and windows["acme"].quality_mean == 0.9
    assert windows["zeta"].quality_scored == 0
