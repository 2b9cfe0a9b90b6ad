"""GenAI spans per second that one ``promptprof collect`` process turns into events on Kafka, and
what the in-process bridge adds to a span's end.

``spans_per_s``: a Tansu broker (memory storage) and the real receiver (``python -m
promptprof_tools.cli collect``, a subprocess configured by ``PROMPTPROF_*`` variables) on free
loopback ports. This process posts OTLP/HTTP protobuf requests of 500 GenAI chat spans each
(the attributes the official OpenAI instrumentation writes, plus ``promptprof.prompt.*``; four
prompt/version series) over 4 connections, as fast as the receiver answers. The time runs from
the first post to the moment the receiver's producer reports every event acked by the broker
(``GET /stats``: ``sent_events``); afterwards a consumer reads the topic and counts the events
(``events_on_kafka`` must equal ``spans_sent``). The posting client shares the machine's cores
with the receiver: ``receiver_cpu_us_per_span`` (the receiver's CPU time over the run, from
/proc) and ``spans_per_receiver_cpu_s`` (its inverse: what one receiver would take with a core
of its own) move less with other load than wall time; ``load_average_1m`` tells that load.

``bridge_added_us_p50`` (and ``_p99``): per span, the time of ``span.end()`` on an SDK tracer
provider holding a ``GenAISpanProcessor`` (its profiler exports to memory), minus the same
percentile on a provider with no processor, the spans carrying the same attributes. Bare and
bridged spans alternate in rounds; percentiles over all samples.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import httpx
from aiokafka import AIOKafkaConsumer
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from promptprof._config import ProducerSettings, Settings
from promptprof._envelope import decode_record
from promptprof._profiler import Profiler
from promptprof.integrations.otel import GenAISpanProcessor
from promptprof.testing import InMemoryExporter
from promptprof_tools.stack.ports import free_port

TOPIC = "bench.otlp.calls"
SPANS_PER_REQUEST = 500
CONNECTIONS = 4
SERIES = [("faq", "v1"), ("faq", "v2"), ("search", "v1"), ("summary", "v3")]


def span_attributes(prompt_id: str, version: str) -> dict[str, Any]:
    """A chat span's attributes as the official OpenAI instrumentation writes them."""
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-9f0cdef0a7f245d5be95",
        "gen_ai.response.finish_reasons": ("stop",), "server.address": "api.openai.com",
        "gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 9,
        "promptprof.prompt.id": prompt_id, "promptprof.prompt.version": version,
    }


def otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, tuple):
        return {"arrayValue": {"values": [otlp_value(v) for v in value]}}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"stringValue": value}


def request_body(index: int) -> bytes:
    """One OTLP protobuf request of :data:`SPANS_PER_REQUEST` GenAI spans."""
    start = time.time_ns()
    spans = []
    for i in range(SPANS_PER_REQUEST):
        prompt_id, version = SERIES[(index + i) % len(SERIES)]
        spans.append({
            "traceId": f"{index:016x}{i:016x}", "spanId": f"{i:016x}",
            "name": "chat gpt-4o-mini", "kind": 3,
            "startTimeUnixNano": str(start + i * 1000),
            "endTimeUnixNano": str(start + i * 1000 + 450_000_000),
            "attributes": [{"key": k, "value": otlp_value(v)}
                           for k, v in span_attributes(prompt_id, version).items()],
        })
    message = ExportTraceServiceRequest()
    json_format.ParseDict({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "bench-service"}}]},
        "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                        "spans": spans}],
    }]}, message)
    return bytes(message.SerializeToString())


def start_receiver(bootstrap: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "PROMPTPROF_TOPICS__CALLS": TOPIC,
        "PROMPTPROF_COLLECT__PORT": str(port),
        "PROMPTPROF_PRODUCER__SERVICE_NAME": "collector",
        "PROMPTPROF_PRODUCER__METRICS_LOG_INTERVAL_S": "0",
        "PROMPTPROF_LOG_LEVEL": "warning",
    }
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "promptprof_tools.cli", "collect"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def receiver_stats(base: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base}/stats", timeout=5).json()
    return stats


def await_receiver(base: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the receiver exited")
        try:
            receiver_stats(base)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError("the receiver did not answer")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post_all(url: str, bodies: list[bytes], rounds: int) -> tuple[int, int]:
    """Post every body ``rounds`` times over :data:`CONNECTIONS` connections; (spans sent,
    503 answers retried)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _ in range(rounds):
        for body in bodies:
            queue.put_nowait(body)
    sent, busy = 0, 0
    headers = {"Content-Type": "application/x-protobuf"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, busy
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                response = await client.post(url, content=body, headers=headers)
                if response.status_code != 503:
                    break
                busy += 1
                await asyncio.sleep(0.05)
            response.raise_for_status()
            sent += SPANS_PER_REQUEST

    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONNECTIONS)))
    return sent, busy


async def count_on_kafka(bootstrap: str, expected: int, timeout_s: float) -> int:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    count = 0
    deadline = time.monotonic() + timeout_s
    try:
        while count < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    count += len(decode_record(record.value))
    finally:
        await consumer.stop()
    return count


def ingest(spans: int) -> dict[str, Any]:
    """``spans_per_s`` and its companions, through a receiver subprocess and Tansu."""
    bodies = [request_body(i) for i in range(8)]
    rounds = max(1, spans // (len(bodies) * SPANS_PER_REQUEST))
    with _common.broker([TOPIC]) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        receiver = start_receiver(bootstrap, port, Path(tmp) / "collect.log")
        try:
            await_receiver(base, receiver, 60)
            asyncio.run(post_all(f"{base}/v1/traces", bodies[:1], 1))  # warm-up
            warm = receiver_stats(base)["producer"]["queued"]
            _await_sent(base, warm, 60)
            cpu_before = cpu_seconds(receiver.pid)
            started = time.perf_counter()
            sent, busy = asyncio.run(post_all(f"{base}/v1/traces", bodies, rounds))
            _await_sent(base, warm + sent, 120)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(receiver.pid) - cpu_before
            stats = receiver_stats(base)
        finally:
            receiver.terminate()
            receiver.wait(30)
        on_kafka = asyncio.run(count_on_kafka(bootstrap, warm + sent, 60))
    return {
        "spans_per_s": sent / elapsed,
        "spans_sent": sent,
        "events_on_kafka": on_kafka - warm,
        "receiver_cpu_us_per_span": cpu / sent * 1e6,
        "spans_per_receiver_cpu_s": sent / cpu,
        "load_average_1m": os.getloadavg()[0],
        "busy_answers": busy,
        "dropped": stats["producer"]["dropped"],
    }


def _await_sent(base: str, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if receiver_stats(base)["producer"]["sent_events"] >= expected:
            return
        time.sleep(0.02)
    _common.log("WARNING: not every event acked in time", expected=expected)


def bridge_overhead(spans: int, rounds: int) -> dict[str, float]:
    """``bridge_added_us_p50``/``_p99``: ``span.end()`` with the bridge minus without."""
    profiler = Profiler(Settings(producer=ProducerSettings(
        buffer_size=spans + 10_000, metrics_log_interval_s=0)), exporter=InMemoryExporter())
    bare = TracerProvider()
    bridged = TracerProvider()
    bridged.add_span_processor(GenAISpanProcessor(profiler=profiler))
    attributes = span_attributes("faq", "v1")
    samples: dict[str, list[int]] = {"bare": [], "bridge": []}
    chunk = spans // rounds
    for provider in (bare, bridged):  # warm-up; starts the profiler's sender
        end_times(provider, attributes, 1_000)
    for _ in range(rounds):
        samples["bare"] += end_times(bare, attributes, chunk)
        samples["bridge"] += end_times(bridged, attributes, chunk)
        profiler.flush(30)
        exporter = profiler.exporter
        assert isinstance(exporter, InMemoryExporter)
        exporter.clear()
    profiler.close(5)
    pct = {name: [_common.percentile(sorted(values), q) / 1e3 for q in (50, 99)]
           for name, values in samples.items()}
    return {
        "bridge_added_us_p50": pct["bridge"][0] - pct["bare"][0],
        "bridge_added_us_p99": pct["bridge"][1] - pct["bare"][1],
        "bare_span_end_us_p50": pct["bare"][0],
    }


def end_times(provider: TracerProvider, attributes: dict[str, Any], n: int) -> list[int]:
    tracer = provider.get_tracer("bench")
    clock = time.perf_counter_ns
    spent = []
    for _ in range(n):
        span = tracer.start_span("chat gpt-4o-mini", attributes=attributes)
        before = clock()
        span.end()
        spent.append(clock() - before)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer spans, same method")
    args = parser.parse_args()
    _common.setup()
    spans, bridge_spans, rounds = (40_000, 20_000, 4) if args.quick else (400_000, 200_000, 10)
    figures = bridge_overhead(bridge_spans, rounds)
    _common.log("bridge measured", **figures)
    figures.update(ingest(spans))
    _common.emit("otlp_ingest", figures)


if __name__ == "__main__":
    main()
