"""Producer and worker throughput on the durable local broker against the memory one, same run.

Durable: Tansu's S3 storage engine on a private ``localbucket`` (records, offsets and committed
group offsets kept on disk, surviving restarts); memory: Tansu's memory storage. Each round runs
both modes, memory first, on a fresh broker each:

- producer: ``producer_throughput``'s promptprof measurement (four ``@profile``-decorated
  no-ops called ``events`` times, then ``flush()`` until every event is acked);
- worker: ``processor_throughput``'s full-envelope measurement (one real ``promptprof worker``
  from the calls topic to closed windows, windows [10, 60] s, sink to InfluxDB on).

Each figure is the median over rounds; ``producer_ratio = producer_durable_events_per_s /
producer_memory_events_per_s`` and ``worker_ratio`` likewise. The local stack runs the durable
broker by default when both ratios are at least ``DEFAULT_THRESHOLD`` (0.8).
"""

from __future__ import annotations

import argparse
import statistics

import _common
import processor_throughput
import producer_throughput

import promptprof

DEFAULT_THRESHOLD = 0.8
MODES = {"memory": False, "durable": True}


def producer_run(durable: bool, events: int) -> float:
    """promptprof's acked events per second on a fresh broker of one mode."""
    topic = producer_throughput.TOPIC
    with _common.broker([topic], durable=durable) as bootstrap:
        profiler = promptprof.configure(
            kafka={"bootstrap_servers": bootstrap},
            topics={"calls": topic},
            producer={"buffer_size": events + 10_000, "metrics_log_interval_s": 0},
        )
        try:
            producer_throughput.run_promptprof(profiler, 2_000)  # warm-up: connects the sender
            return producer_throughput.run_promptprof(profiler, events)["events_per_s"]
        finally:
            promptprof.shutdown(5.0)


def worker_run(durable: bool, events: int) -> float:
    """One worker's events per second from the calls topic to closed windows, one mode."""
    args = argparse.Namespace(timeout=600.0, py_spy=None)
    events_per_s: float = processor_throughput.run(args, events, durable=durable)["events_per_s"]
    return events_per_s


def main() -> None:
    """Parse arguments, run the rounds, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds")
    args = parser.parse_args()
    _common.setup()
    # the worker's events stay at 300,000 in both: on the durable broker its fetches slow down
    # as a partition's log grows (one S3 listing of the partition per fetch), and 1,000,000
    # did not finish within 600 s
    producer_events, worker_events, rounds = (
        (100_000, 300_000, 1) if args.quick else (300_000, 300_000, 3)
    )
    producer: dict[str, list[float]] = {mode: [] for mode in MODES}
    worker: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode, durable in MODES.items():
            producer[mode].append(producer_run(durable, producer_events))
            worker[mode].append(worker_run(durable, worker_events))
            _common.log("round", n=r + 1, mode=mode, producer=round(producer[mode][-1]),
                        worker=round(worker[mode][-1]))
    figures: dict[str, float] = {}
    for name, runs in (("producer", producer), ("worker", worker)):
        memory, durable_eps = statistics.median(runs["memory"]), statistics.median(runs["durable"])
        figures |= {
            f"{name}_memory_events_per_s": memory,
            f"{name}_durable_events_per_s": durable_eps,
            f"{name}_ratio": durable_eps / memory,
        }
    default = min(figures["producer_ratio"], figures["worker_ratio"]) >= DEFAULT_THRESHOLD
    _common.emit("broker", {
        "quick": args.quick, **figures, "rounds": rounds, "producer_events": producer_events,
        "worker_events": worker_events, "durable_default_threshold": DEFAULT_THRESHOLD,
        "durable_keeps_threshold": default,
    })


if __name__ == "__main__":
    main()
