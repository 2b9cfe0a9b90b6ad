"""What an open hourly rollup costs in the worker's checkpoint, per series.

In process, no broker: a :class:`WindowAggregator` (windows [10, 60] s, lateness 30 s) takes
``--series`` series (default 1,000; the 20-series mix of the other benches, its prompts
repeated) each making one call per second (realistic latency, TTFT, token, cost, quality and
error figures from :class:`_stack.EventFactory`) for ``--minutes`` minutes of event time
(default 30) from the start of an hour, closing windows as it goes. Then its whole checkpointed
state (``snapshot()``, orjson bytes, what a base checkpoint holds) is measured, once with
``rollup_widths_s=[]`` and once with ``[3600]``: ``checkpoint_bytes_per_series_no_rollup`` and
``checkpoint_bytes_per_series_open_hour``, and their ratio. For comparison,
``checkpoint_bytes_per_series_hour_as_width`` is the state with 3600 s as an ordinary width
(``widths_s=[10, 60, 3600]``), which keeps every 10 s base window of the open hour.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import _common
import _stack
import orjson

from promptprof_processor.ingest.validation import validate_events
from promptprof_processor.settings import WindowSettings
from promptprof_processor.windows.aggregator import WindowAggregator

NS = _stack.NS
BATCH_S = 10


def calls(series: int, minutes: int) -> list[list[dict[str, Any]]]:
    """Batches of validated call records, 10 s of event time each, from the top of an hour."""
    mix = _stack.series_mix(20)
    factory = _stack.EventFactory(mix, seed=5)
    specs = [mix[i % len(mix)] for i in range(series)]
    hour = 1_800_000_000 // 3600 * 3600
    batches = []
    for second in range(0, minutes * 60, BATCH_S):
        raw = [factory.event(spec, (hour + second + offset) * NS + i)
               for offset in range(BATCH_S) for i, spec in enumerate(specs)]
        for i, event in enumerate(raw):  # one series per spec: version i keeps them apart
            event["promptprof.prompt.version"] = f"v{i % series}"
        good, bad = validate_events(raw)
        assert not bad, bad[:1]
        batches.append(good)
    return batches


def state_bytes(settings: WindowSettings, batches: list[list[Any]]) -> int:
    """The orjson bytes of the aggregator's whole state after taking ``batches``."""
    agg = WindowAggregator(settings)
    for batch in batches:
        agg.add(batch)
        agg.advance()
    return len(orjson.dumps(agg.snapshot()))


def main() -> None:
    """Parse arguments, measure, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="200 series, 10 minutes")
    args = parser.parse_args()
    series, minutes = (200, 10) if args.quick else (args.series, args.minutes)
    _common.setup()
    random.seed(1)
    batches = calls(series, minutes)
    base = {"widths_s": [10, 60], "allowed_lateness_s": 30}
    plain = state_bytes(WindowSettings(**base, rollup_widths_s=[]), batches)
    rolled = state_bytes(WindowSettings(**base, rollup_widths_s=[3600]), batches)
    as_width = state_bytes(WindowSettings(widths_s=[10, 60, 3600], allowed_lateness_s=30,
                                          rollup_widths_s=[]), batches)
    _common.emit("rollup_state", {
        "series": series, "minutes": minutes,
        "checkpoint_bytes_per_series_no_rollup": plain / series,
        "checkpoint_bytes_per_series_open_hour": rolled / series,
        "checkpoint_ratio_open_hour_vs_no_rollup": rolled / plain,
        "checkpoint_bytes_per_series_hour_as_width": as_width / series,
    })


if __name__ == "__main__":
    main()
