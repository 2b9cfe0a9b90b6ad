"""Fixtures for the OpenTelemetry bridge and the OTLP receiver.

Each request is made twice against the fake provider with the same scripted reply: once by a
client wrapped with ``wrap_openai`` (the reference event), once by a plain client while a real
instrumentation of the OpenAI client (the official one or OpenLLMetry's) is active on a tracer
provider holding the bridge and the real OTLP/HTTP exporter pointed at a receiver. Both at once
is not possible: the official instrumentation returns its own stream class, which the wrapper
does not recognise as a stream.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# LiteLLM fetches its price map from GitHub when imported unless told to use its own copy
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import openai
import pytest
import wrapt
from integrations.conftest import event_of, recording_profiler
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from promptprof import Profiler
from promptprof.integrations import wrap_openai
from promptprof.integrations.otel import GenAISpanProcessor, prompt
from promptprof.testing import InMemoryExporter
from promptprof.testing._fake_providers import FakeProviderServer, FakeReply
from promptprof_tools.collect.grpc_server import serve_grpc
from promptprof_tools.collect.server import TRACES_PATH, Receiver, bound_port, serve
from promptprof_tools.collect.settings import CollectorSettings

INSTRUMENTATIONS = ("official", "openllmetry")
Request = Callable[[openai.OpenAI], Any]


def instrumentor(name: str) -> Any:
    """The instrumentor of ``name``: the official OpenAI instrumentation or OpenLLMetry's."""
    if name == "official":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as Official

        return Official()
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry

    return OpenLLMetry()


class RunningReceiver:
    """``promptprof collect``'s receiver on a free port, served by a thread of its own."""

    def __init__(self, profiler: Profiler, settings: CollectorSettings | None = None) -> None:
        self.profiler = profiler
        self.receiver = Receiver(profiler, settings or CollectorSettings())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            serve(self.receiver, "127.0.0.1", 0), self.loop)
        self.runner = started.result(10)
        self.url = f"http://127.0.0.1:{bound_port(self.runner)}{TRACES_PATH}"
        self.grpc_server: Any = None
        self.grpc_port = 0

    def start_grpc(self) -> str:
        """Serve OTLP/gRPC too; its ``host:port``."""
        started = asyncio.run_coroutine_threadsafe(
            serve_grpc(self.receiver, "127.0.0.1", 0), self.loop)
        self.grpc_server, self.grpc_port = started.result(10)
        return f"127.0.0.1:{self.grpc_port}"

    def close(self) -> None:
        """Stop serving and the thread."""
        if self.grpc_server is not None:
            asyncio.run_coroutine_threadsafe(self.grpc_server.stop(1), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Traced:
    """A tracer provider with the bridge and an OTLP exporter to a receiver (each span sent
    as it ends), and an instrumentation that is active only inside :meth:`active`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.profiler = recording_profiler()
        self.bridge = GenAISpanProcessor(profiler=self.profiler)
        self.received = RunningReceiver(recording_profiler())
        self.provider = TracerProvider(resource=Resource({"service.name": "tests"}))
        self.provider.add_span_processor(self.bridge)
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.received.url)))
        self.instrumentor = instrumentor(name)

    @contextmanager
    def active(self) -> Iterator[None]:
        """The OpenAI client is instrumented inside the block."""
        self.instrumentor.instrument(tracer_provider=self.provider)
        try:
            yield
        finally:
            self.instrumentor.uninstrument()
            _unwrap_openai()

    def clear(self) -> None:
        """Forget the events of the bridge and of the receiver so far."""
        for profiler in (self.profiler, self.received.profiler):
            assert profiler.flush(5)
            exporter = profiler.exporter
            assert isinstance(exporter, InMemoryExporter)
            exporter.clear()

    def close(self) -> None:
        """Shut the provider, the receiver and the profilers down."""
        self.provider.shutdown()
        self.received.close()
        self.profiler.close(1)
        self.received.profiler.close(1)


class Pair:
    """Makes one request twice: wrapped (reference) and instrumented (spans)."""

    def __init__(self, server: FakeProviderServer, traced: Traced, wrapper: Profiler) -> None:
        self.server, self.traced, self.wrapper = server, traced, wrapper
        base_url = server.openai_base_url
        self.wrapped = wrap_openai(
            openai.OpenAI(base_url=base_url, api_key="test", max_retries=0),
            prompt_id="faq", version="v1", labels={"team": "search"}, profiler=wrapper,
        )
        self.plain = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
        self.window = (0, 0)

    def run(self, request: Request, reply: FakeReply | None = None) -> dict[str, Any]:
        """Make ``request`` both ways (each answered with ``reply``); the reference event.

        ``window`` then holds the wall-clock times around the instrumented request."""
        for client in (self.wrapped, self.plain):
            self.server.script(reply or FakeReply())
            if client is self.plain:
                with self.traced.active(), prompt("faq", "v1", {"team": "search"}):
                    before = time.time_ns()
                    _outcome(request, client)
                    self.window = (before, time.time_ns())
            else:
                _outcome(request, client)
        return event_of(self.wrapper)

    def close(self) -> None:
        """Close both clients."""
        self.wrapped.close()
        self.plain.close()


def _hello(client: openai.OpenAI, stream: bool) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=stream,
    )


def _unwrap_openai() -> None:
    """Undo what an uninstrument left wrapped (OpenLLMetry 0.62.4 unwraps none of its 24
    methods of the openai 3 client, so a second instrument would wrap them twice)."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("openai.resources"):
            continue
        for cls in [c for c in vars(module).values() if inspect.isclass(c)]:
            for attribute, value in list(vars(cls).items()):
                if isinstance(value, wrapt.FunctionWrapper):
                    setattr(cls, attribute, value.__wrapped__)


def _outcome(request: Request, client: openai.OpenAI) -> None:
    """Make the request; a provider error is part of the outcome under test."""
    try:
        result = request(client)
        if isinstance(result, openai.Stream) or hasattr(result, "__next__"):
            list(result)
    except openai.APIError:
        pass


@pytest.fixture(scope="module", params=INSTRUMENTATIONS)
def traced(request: pytest.FixtureRequest, fake_server: FakeProviderServer) -> Iterator[Traced]:
    """The bridge behind one instrumentation, for the module's tests, warmed up (the first
    instrumented request pays for lazy imports, hundreds of ms)."""
    made = Traced(str(request.param))
    with made.active(), openai.OpenAI(
        base_url=fake_server.openai_base_url, api_key="test", max_retries=0
    ) as client:
        for stream in (False, True):
            _outcome(functools.partial(
                _hello, stream=stream), client)
    yield made
    made.close()


@pytest.fixture
def pair(server: FakeProviderServer, traced: Traced) -> Iterator[Pair]:
    """A wrapped and a plain client against the fake provider."""
    traced.clear()
    wrapper = recording_profiler()
    made = Pair(server, traced, wrapper)
    yield made
    made.close()
    wrapper.close(1)
