"""Benchmark: percentile accuracy of the processor's DDSketches against exact percentiles.

For several distributions (lognormal latencies, a heavy-tailed lognormal, a bimodal mix of fast
and slow calls, uniform, integer token counts) and several seeds, values are added the way the
processor adds them (:func:`promptprof_processor.windows.sketches.add_values`, batches of 500) in
two
ways: into one sketch, and into ten partial sketches that go through the checkpoint codec
(orjson) and are merged, as a rollup does. The relative error of p50/p95/p99 is measured against
the exact percentile of the same rank convention (numpy ``method="lower"``: the element at rank
floor(q * (n - 1)), which DDSketch's 1% guarantee is about); errors against numpy's default
linear interpolation are printed too. Also times bulk insertion against ``DDSketch.add`` per
value (the peer).

Usage: ``.venv/bin/python bench/sketch_accuracy.py [--quick]``; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

import numpy as np
import orjson

from promptprof_processor.windows.sketches import (
    Sketch,
    add_values,
    decode_sketch,
    encode_sketch,
    merge_into,
    new_sketch,
    quantile,
)

log = logging.getLogger("sketch_accuracy")
QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
BATCH = 500
PARTS = 10

Generator = Callable[[np.random.Generator, int], np.ndarray]
DISTRIBUTIONS: dict[str, Generator] = {
    "lognormal_latency": lambda rng, n: rng.lognormal(np.log(800.0), 0.6, n),
    "heavy_tail_latency": lambda rng, n: rng.lognormal(np.log(300.0), 1.5, n),
    "bimodal_latency": lambda rng, n: np.where(
        rng.random(n) < 0.9,
        np.abs(rng.normal(200.0, 20.0, n)),
        np.abs(rng.normal(5000.0, 500.0, n)),
    ),
    "uniform": lambda rng, n: rng.uniform(1.0, 1000.0, n),
    "token_counts": lambda rng, n: rng.integers(1, 4000, n).astype(float),
}


def direct_sketch(values: list[float]) -> Sketch:
    """One sketch, fed in envelope-sized batches."""
    sketch = new_sketch()
    for start in range(0, len(values), BATCH):
        add_values(sketch, values[start : start + BATCH], None)
    return sketch


def merged_sketch(values: list[float]) -> Sketch:
    """Partial sketches, each through the orjson codec, merged into one."""
    result = new_sketch()
    size = -(-len(values) // PARTS)
    for start in range(0, len(values), size):
        part = direct_sketch(values[start : start + size])
        merge_into(result, decode_sketch(orjson.loads(orjson.dumps(encode_sketch(part)))))
    return result


def relative_errors(sketch: Sketch, values: np.ndarray, method: str) -> dict[str, float]:
    """Relative error of each percentile against numpy's exact percentile by ``method``."""
    errors = {}
    for name, q in QUANTILES.items():
        exact = float(np.quantile(values, q, method=method))  # type: ignore[call-overload]
        approx = quantile(sketch, q)
        assert approx is not None
        errors[name] = abs(approx - exact) / exact
    return errors


def accuracy(n: int, seeds: int) -> dict[str, dict[str, float]]:
    """Worst relative error per distribution, percentile and reference method."""
    worst: dict[str, dict[str, float]] = {}
    for dist, generate in DISTRIBUTIONS.items():
        figures = worst.setdefault(dist, {})
        for seed in range(seeds):
            values = generate(np.random.default_rng(seed), n)
            as_list = values.tolist()
            for sketch in (direct_sketch(as_list), merged_sketch(as_list)):
                for method, suffix in (("lower", ""), ("linear", "_vs_linear")):
                    for name, error in relative_errors(sketch, values, method).items():
                        key = f"{name}{suffix}"
                        figures[key] = max(figures.get(key, 0.0), error)
        log.info("%s: %s", dist, {k: round(v, 5) for k, v in figures.items()})
    return worst


def insertion_speed(n: int) -> tuple[float, float]:
    """Nanoseconds per value: bulk insertion, and DDSketch.add per value."""
    values = np.random.default_rng(99).lognormal(np.log(800.0), 0.6, n).tolist()
    started = time.perf_counter()
    direct_sketch(values)
    bulk = time.perf_counter() - started
    single = new_sketch()
    started = time.perf_counter()
    for value in values:
        single.add(value)
    peer = time.perf_counter() - started
    return bulk / n * 1e9, peer / n * 1e9


def main() -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer values and seeds")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    n, seeds = (20_000, 3) if args.quick else (200_000, 10)
    log.info("sketch accuracy: %d values x %d seeds per distribution", n, seeds)
    worst = accuracy(n, seeds)
    bulk_ns, peer_ns = insertion_speed(n)
    result: dict[str, object] = {"bench": "sketch_accuracy"}
    for key in (*QUANTILES, *(f"{q}_vs_linear" for q in QUANTILES)):
        result[f"max_rel_error_{key}"] = max(figures[key] for figures in worst.values())
    result.update(
        values_per_distribution=n,
        seeds=seeds,
        add_ns_per_value=round(bulk_ns, 1),
        ddsketch_add_ns_per_value=round(peer_ns, 1),
        ratio_add_vs_ddsketch_add=round(bulk_ns / peer_ns, 3),
        by_distribution=worst,
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
