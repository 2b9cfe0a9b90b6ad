"""Microseconds that ``@profile`` adds to a call, against OpenTelemetry and Langfuse.

Variants, each wrapping the same no-op function: ``bare`` (undecorated); ``promptprof``
(``@profile`` through the process-wide profiler, its sender RUNNING against a real Tansu broker
started here); ``otel`` (a decorator opening ``tracer.start_as_current_span`` on an SDK
TracerProvider with a BatchSpanProcessor and a no-op exporter); ``langfuse`` (Langfuse 5's
``@observe``, client pointed at a closed loopback port with dummy keys, export timeout 1 s: its
export thread retries in the background and its span queue fills and drops, after all per-span
work is done). An async variant (``async def`` no-op, awaited) is measured for bare, promptprof
and otel.

Method: every call is timed on its own with ``time.perf_counter_ns`` before and after it, so the
distribution keeps its tail (per-batch means would hide it). The variants run in interleaved
rounds (order rotated each round) so machine noise is spread over all of them; after each
promptprof chunk the profiler is flushed outside the timed region. The added cost is taken
percentile by percentile: ``added_us_p50 = p50(decorated) - p50(bare)``, p99 likewise (the clock
reads cancel out). The profiler's buffer holds every call of the run, so no call is dropped;
``dropped`` and ``sent_events`` are reported and a drop makes the run fail loudly on stderr.
``bytes_held_max`` and its companions come from ``_producer_memory``, and
``host_us_p99_stream_without_usage`` and its companions from ``_stream_overhead`` (see their
docstrings).
``ratio_vs_otel_p50 = otel_added_us_p50 / added_us_p50``: above 1 means promptprof adds less than
OpenTelemetry (``ratio_vs_langfuse_p50`` likewise).

CPU per call, background work included (after the latency rounds, Langfuse shut down): a phase
makes N calls and then waits for their delivery (promptprof: ``profiler.flush``, until the
sender thread has serialised and sent every event to Kafka and had it acknowledged; OTel:
``force_flush``, until the BatchSpanProcessor's worker thread has handed every span to the no-op
exporter). The phase's CPU time is the process's (``time.process_time_ns``: every thread, the
host's and the background sender's or exporter's); the same N bare calls' CPU is subtracted and
the rest divided by N. Phases are interleaved over several rounds, the median round is kept:
``cpu_us_per_call_total`` (promptprof), ``otel_cpu_us_per_call_total`` and
``ratio_vs_otel_cpu = otel_cpu_us_per_call_total / cpu_us_per_call_total``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import _common
import _producer_memory
import _stream_overhead
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import promptprof
from promptprof_tools.stack.ports import free_port

SyncFn = Callable[[], Any]
AsyncFn = Callable[[], Awaitable[Any]]
TOPIC = "llm.calls"


class NoopExporter(SpanExporter):
    """Accepts every span batch and does nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Drop the spans."""
        return SpanExportResult.SUCCESS


def noop() -> None:
    """The measured function."""


async def anoop() -> None:
    """The measured coroutine function."""


def otel_wrappers(tracer: Any) -> tuple[SyncFn, AsyncFn]:
    """``noop`` and ``anoop`` each inside an OpenTelemetry span."""

    @functools.wraps(noop)
    def sync() -> None:
        with tracer.start_as_current_span("noop"):
            return noop()

    @functools.wraps(anoop)
    async def asyn() -> None:
        with tracer.start_as_current_span("anoop"):
            return await anoop()

    return sync, asyn


def time_sync(fn: SyncFn, n: int) -> list[int]:
    """Nanoseconds of each of ``n`` calls of ``fn``."""
    out = [0] * n
    perf = time.perf_counter_ns
    for i in range(n):
        t0 = perf()
        fn()
        out[i] = perf() - t0
    return out


async def time_async(fn: AsyncFn, n: int) -> list[int]:
    """Nanoseconds of each of ``n`` awaited calls of ``fn``."""
    out = [0] * n
    perf = time.perf_counter_ns
    for i in range(n):
        t0 = perf()
        await fn()
        out[i] = perf() - t0
    return out


def cpu_phase(fn: SyncFn, settle: Callable[[], object], n: int) -> int:
    """Process CPU nanoseconds (all threads) of ``n`` calls of ``fn`` and then ``settle()``."""
    started = time.process_time_ns()
    for _ in range(n):
        fn()
    settle()
    return time.process_time_ns() - started


def cpu_per_call(
    variants: dict[str, tuple[SyncFn, Callable[[], object]]], n: int, rounds: int
) -> dict[str, float]:
    """Median over ``rounds`` of each variant's CPU microseconds per call beyond a bare call."""
    per_round: dict[str, list[float]] = {name: [] for name in variants if name != "bare"}
    names = list(variants)
    for r in range(rounds):
        shift = r % len(names)
        spent = {name: cpu_phase(*variants[name], n) for name in names[shift:] + names[:shift]}
        for name in per_round:
            per_round[name].append((spent[name] - spent["bare"]) / n / 1e3)
    return {name: sorted(values)[len(values) // 2] for name, values in per_round.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, same method")
    args = parser.parse_args()
    _common.setup()
    for name in ("langfuse", "opentelemetry"):  # the unreachable backend's retry warnings
        logging.getLogger(name).setLevel(logging.CRITICAL)
    calls, rounds = (20_000, 4) if args.quick else (200_000, 10)
    cpu_rounds = 3 if args.quick else 5
    chunk = calls // rounds

    with _common.broker([TOPIC]) as bootstrap:
        profiler = promptprof.configure(
            kafka={"bootstrap_servers": bootstrap},
            topics={"calls": TOPIC},
            producer={"buffer_size": 2 * calls + 10_000, "metrics_log_interval_s": 0},
        )
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
        otel_sync, otel_async = otel_wrappers(provider.get_tracer("bench"))

        from langfuse import Langfuse, observe

        langfuse = Langfuse(
            public_key="pk-lf-bench",
            secret_key="sk-lf-bench",
            host=f"http://127.0.0.1:{free_port()}",
            timeout=1,
        )
        sync_fns: dict[str, SyncFn] = {
            "bare": noop,
            "promptprof": promptprof.profile(prompt_id="bench", version="1")(noop),
            "otel": otel_sync,
            "langfuse": observe(name="noop")(noop),
        }
        async_fns: dict[str, AsyncFn] = {
            "bare": anoop,
            "promptprof": promptprof.profile(prompt_id="bench-async", version="1")(anoop),
            "otel": otel_async,
        }
        for fn in sync_fns.values():  # warm up; connects the promptprof sender
            time_sync(fn, 1_000)
        for afn in async_fns.values():
            asyncio.run(time_async(afn, 1_000))
        if not profiler.flush(30.0):
            _common.log("WARNING: warm-up not sent", stats=profiler.stats())

        samples: dict[str, list[int]] = {}
        names = [*sync_fns, *(f"async_{n}" for n in async_fns)]
        started = time.monotonic()
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if name.startswith("async_"):
                    got = asyncio.run(time_async(async_fns[name[6:]], chunk))
                else:
                    got = time_sync(sync_fns[name], chunk)
                samples.setdefault(name, []).extend(got)
                if name.endswith("promptprof"):
                    profiler.flush(30.0)
            _common.log("round done", round=r + 1, of=rounds, s=round(time.monotonic() - started))

        stats = profiler.stats()
        langfuse.shutdown()
        cpu = cpu_per_call(
            {
                "bare": (noop, lambda: None),
                "promptprof": (sync_fns["promptprof"], lambda: profiler.flush(60.0)),
                "otel": (otel_sync, provider.force_flush),
            },
            chunk,
            cpu_rounds,
        )
        cpu_stats = profiler.stats()
        stream = _stream_overhead.figures(profiler, calls // 2, rounds)
        provider.shutdown()
        promptprof.shutdown(5.0)

    pct: dict[str, tuple[float, float]] = {}
    for name, ns in samples.items():
        ns.sort()
        pct[name] = (_common.percentile(ns, 50) / 1e3, _common.percentile(ns, 99) / 1e3)

    def added(name: str, q: int, prefix: str = "") -> float:
        return pct[prefix + name][q] - pct[prefix + "bare"][q]

    expected = 2 * (calls + 1_000)
    if stats["dropped"] or stats["sent_events"] != expected:
        _common.log(
            "WARNING: not representative",
            dropped=stats["dropped"],
            sent=stats["sent_events"],
            expected=expected,
        )
    figures: dict[str, float | int] = {
        "added_us_p50": added("promptprof", 0),
        "added_us_p99": added("promptprof", 1),
        "otel_added_us_p50": added("otel", 0),
        "otel_added_us_p99": added("otel", 1),
        "langfuse_added_us_p50": added("langfuse", 0),
        "langfuse_added_us_p99": added("langfuse", 1),
        "ratio_vs_otel_p50": added("otel", 0) / max(added("promptprof", 0), 1e-3),
        "ratio_vs_langfuse_p50": added("langfuse", 0) / max(added("promptprof", 0), 1e-3),
        "bare_us_p50": pct["bare"][0],
        "bare_us_p99": pct["bare"][1],
        "async_added_us_p50": added("promptprof", 0, "async_"),
        "async_added_us_p99": added("promptprof", 1, "async_"),
        "async_otel_added_us_p50": added("otel", 0, "async_"),
        "async_otel_added_us_p99": added("otel", 1, "async_"),
        "async_bare_us_p50": pct["async_bare"][0],
        "cpu_us_per_call_total": cpu["promptprof"],
        "otel_cpu_us_per_call_total": cpu["otel"],
        "ratio_vs_otel_cpu": cpu["otel"] / max(cpu["promptprof"], 1e-3),
        "cpu_calls_per_phase": chunk,
        "cpu_dropped": cpu_stats["dropped"],
        "calls": calls,
        "dropped": stats["dropped"],
        "sent_events": stats["sent_events"],
    }
    figures |= stream  # host_us_p99_stream_without_usage: see bench/_stream_overhead.py
    figures |= _producer_memory.figures()  # bytes_held_max: see bench/_producer_memory.py
    _common.emit("producer_overhead", figures)


if __name__ == "__main__":
    main()
