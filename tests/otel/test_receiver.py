"""``promptprof collect``'s receiver on the wire: OTLP/JSON and gzip, partial success, size and
token limits, back-pressure, malformed bodies (fuzzed), and the publish path to real Kafka."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integrations.conftest import events_of, recording_profiler
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from producer.test_hostile_values import read_events

from promptprof import Profiler
from promptprof._config import ProducerSettings, Settings
from promptprof.collect.settings import CollectorSettings
from promptprof_tools.stack.tansu import TansuBroker

from .conftest import RunningReceiver

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
GENAI = {
    "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 25,
    "gen_ai.usage.output_tokens": 9, "promptprof.prompt.id": "faq",
    "promptprof.prompt.version": "v1",
}


def json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    return {"intValue": str(value)}


def json_span(attributes: dict[str, Any], name: str = "chat gpt-4o-mini") -> dict[str, Any]:
    """A span as OTLP/JSON writes it: hex ids, camelCase, int64 as strings."""
    return {
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": name, "kind": 3, "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000250000000",
        "attributes": [{"key": k, "value": json_value(v)} for k, v in attributes.items()],
        "status": {},
    }


def json_request(*spans: dict[str, Any], service: str = "checkout") -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
    }]}).encode()


def protobuf_request(*spans: dict[str, Any]) -> bytes:
    from google.protobuf import json_format

    message = ExportTraceServiceRequest()
    json_format.Parse(json_request(*spans), message)
    return bytes(message.SerializeToString())


@pytest.fixture
def profiler() -> Iterator[Profiler]:
    made = recording_profiler()
    yield made
    made.close(1)


@pytest.fixture
def make_receiver(profiler: Profiler) -> Iterator[Callable[..., RunningReceiver]]:
    started: list[RunningReceiver] = []

    def make(**collect: Any) -> RunningReceiver:
        receiver = RunningReceiver(profiler, CollectorSettings(collect=collect))
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.close()


@pytest.fixture
def receiver(make_receiver: Callable[..., RunningReceiver]) -> RunningReceiver:
    return make_receiver()


def post(receiver: RunningReceiver, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(receiver.url, content=body, headers=headers, timeout=10)


def test_json_request_records_genai_spans_and_counts_the_rest(
    receiver: RunningReceiver, profiler: Profiler
) -> None:
    body = json_request(json_span(GENAI), json_span({"http.method": "GET"}, "GET /"))
    response = post(receiver, body, JSON)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {}  # no partial success: nothing rejected
    (event,) = events_of(profiler)
    assert event["service.name"] == "checkout"
    assert event["promptprof.prompt.id"] == "faq"
    assert event["start_time_unix_nano"] == 1_700_000_000_000_000_000
    assert event["promptprof.latency_ms"] == 250.0
    assert event["gen_ai.usage.input_tokens"] == 25
    stats = receiver.receiver.stats
    assert (stats.spans, stats.genai_spans, stats.recorded_spans, stats.ignored_spans) == (
        2, 1, 1, 1)


def test_gzip_protobuf_request(receiver: RunningReceiver, profiler: Profiler) -> None:
    body = gzip.compress(protobuf_request(json_span(GENAI)))
    response = post(receiver, body, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")
    assert len(events_of(profiler)) == 1


def test_rejected_spans_come_back_as_partial_success(
    receiver: RunningReceiver, profiler: Profiler
) -> None:
    bad = json_span({**GENAI, "promptprof.prompt.id": "two\nlines"})
    response = post(receiver, protobuf_request(bad, json_span(GENAI)), PROTOBUF)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "prompt_id" in partial.error_message
    assert len(events_of(profiler)) == 1
    assert receiver.receiver.stats.rejected_spans == 1


def test_body_over_the_limit_is_413(
    make_receiver: Callable[..., RunningReceiver], profiler: Profiler
) -> None:
    receiver = make_receiver(max_body_bytes=1024)
    assert post(receiver, b"\0" * 2048, PROTOBUF).status_code == 413
    bomb = gzip.compress(b"\0" * 100_000)  # small on the wire, too large inflated
    assert len(bomb) < 1024
    assert post(receiver, bomb, {**PROTOBUF, "Content-Encoding": "gzip"}).status_code == 413
    assert events_of(profiler) == []


def test_bearer_token(make_receiver: Callable[..., RunningReceiver], profiler: Profiler) -> None:
    receiver = make_receiver(bearer_token="s3cret")
    body = protobuf_request(json_span(GENAI))
    refused = post(receiver, body, PROTOBUF)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert post(receiver, body, {**PROTOBUF, "Authorization": "Bearer wrong"}).status_code == 401
    assert post(receiver, body, {**PROTOBUF, "Authorization": "Bearer s3cret"}).status_code == 200
    assert len(events_of(profiler)) == 1


@pytest.mark.parametrize(("body", "headers", "status", "says"), [
    (b"{}", {"Content-Type": "text/plain"}, 415, "content type"),
    (b"\xff\xff\xff", PROTOBUF, 400, "not an OTLP trace request"),
    (b"{not json", JSON, 400, "not an OTLP trace request"),
    (b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "gzip"),
    (b"", {**PROTOBUF, "Content-Encoding": "br"}, 415, "content encoding"),
])
def test_malformed_requests_get_clear_4xx(
    receiver: RunningReceiver, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    from google.rpc.status_pb2 import Status

    response = post(receiver, body, headers)
    assert response.status_code == status
    if headers["Content-Type"] == PROTOBUF["Content-Type"]:
        assert says in Status.FromString(response.content).message
    else:
        assert says in response.text


def test_a_request_the_buffer_cannot_hold_answers_503_and_records_nothing() -> None:
    small = Profiler(Settings(producer=ProducerSettings(buffer_size=100)))
    receiver = RunningReceiver(small, CollectorSettings())
    try:
        response = post(receiver, protobuf_request(*[json_span(GENAI)] * 101), PROTOBUF)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert receiver.receiver.stats.recorded_spans == 0
        assert small.stats()["recorded"] == 0
    finally:
        receiver.close()
        small.close(0)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=2000),
    st.lists(st.builds(json_span, st.dictionaries(
        st.sampled_from([*GENAI, "error.type", "gen_ai.system"]),
        st.one_of(st.text(max_size=8), st.integers(-5, 10**12)))), max_size=3).map(
            lambda spans: protobuf_request(*spans)),
    st.text(max_size=300).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                     st.sampled_from(["resourceSpans", "scopeSpans", "spans", "attributes",
                                      "key", "value", "stringValue", "name"]), inner,
                     max_size=3), max_leaves=20).map(lambda doc: json.dumps(doc).encode()),
), kind=st.sampled_from([PROTOBUF, JSON]), gzipped=st.booleans())
def test_fuzzed_bodies_never_break_the_receiver(
    receiver: RunningReceiver, body: bytes, kind: dict[str, str], gzipped: bool
) -> None:
    headers = dict(kind)
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    assert post(receiver, body, headers).status_code in (200, 400)


def test_after_fuzzing_nothing_valid_is_lost(
    receiver: RunningReceiver, profiler: Profiler
) -> None:
    for junk in (b"\x0a\xff\x01", b"[1,2]", b"\x00" * 50):
        post(receiver, junk, PROTOBUF)
        post(receiver, junk, JSON)
    for _ in range(5):
        assert post(receiver, protobuf_request(json_span(GENAI)), PROTOBUF).status_code == 200
    assert len(events_of(profiler)) == 5
    assert profiler.internal_errors == 0


def test_published_to_kafka(
    kafka_broker: TansuBroker, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("calls")
    settings = CollectorSettings(
        kafka={"bootstrap_servers": kafka_broker.bootstrap},
        topics={"calls": topic, "partitions": 1},
        producer={"service_name": "collector", "linger_ms": 5, "compression": "none"},
    )
    profiler = Profiler(settings)
    receiver = RunningReceiver(profiler, settings)
    try:
        spans = [json_span({**GENAI, "promptprof.prompt.version": f"v{i}"}) for i in range(50)]
        assert post(receiver, protobuf_request(*spans), PROTOBUF).status_code == 200
        assert profiler.flush(30)
    finally:
        receiver.close()
        profiler.close(5)
    events = read_events(kafka_broker.bootstrap, topic, 50)
    assert sorted(e["promptprof.prompt.version"] for e in events) == sorted(
        f"v{i}" for i in range(50))
    assert {e["service.name"] for e in events} == {"checkout"}
    assert profiler.stats()["sent_events"] == 50


def test_otlp_grpc(make_receiver: Callable[..., RunningReceiver], profiler: Profiler) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    receiver = make_receiver(bearer_token="s3cret")
    endpoint = receiver.start_grpc()
    kept = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    with provider.get_tracer("t").start_as_current_span("chat", attributes=GENAI):
        pass
    spans = kept.get_finished_spans()

    def export(token: str) -> SpanExportResult:
        exporter = GrpcExporter(endpoint=endpoint, insecure=True, timeout=5,
                                headers={"authorization": f"Bearer {token}"})
        try:
            return exporter.export(spans)
        finally:
            exporter.shutdown()

    assert export("wrong") == SpanExportResult.FAILURE
    assert export("s3cret") == SpanExportResult.SUCCESS
    (event,) = events_of(profiler)
    assert event["service.name"] == "checkout"
    assert event["promptprof.prompt.id"] == "faq"
    assert receiver.receiver.stats.refused_requests == 1


def test_collect_command_serves_and_stops_on_sigterm(
    kafka_broker: TansuBroker, unique_name: Callable[[str], str]
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from promptprof_tools.stack.ports import free_port

    port = free_port()
    env = {**os.environ, "PROMPTPROF_COLLECT__PORT": str(port),
           "PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
           "PROMPTPROF_TOPICS__CALLS": unique_name("calls")}
    process = subprocess.Popen([sys.executable, "-m", "promptprof_tools.cli", "collect"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1).json()
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert stats["receiver"]["requests"] == 0
        body = protobuf_request(json_span(GENAI))
        url = f"http://127.0.0.1:{port}/v1/traces"
        assert httpx.post(url, content=body, headers=PROTOBUF, timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0  # 0: the span's event was delivered before it stopped
    finally:
        if process.poll() is None:
            process.kill()
