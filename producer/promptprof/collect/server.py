"""The OTLP/HTTP receiver: ``POST /v1/traces`` in, call events out through the producer.

Each request is decoded, its GenAI spans converted (:mod:`promptprof.integrations._genai`)
and handed to a :class:`~promptprof._profiler.Profiler`, whose sender batches them to Kafka
(with the disk spool when ``producer.spool_dir`` is set). Other spans are counted and ignored.
A GenAI span whose values cannot become an event is rejected and reported in OTLP's partial
success. While the profiler's buffer cannot take a request's spans the receiver answers 503
with ``Retry-After`` (OTLP senders retry), so a burst is slowed down rather than dropped.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from aiohttp import web

from promptprof._event import MAX_ERROR_TYPE_LEN
from promptprof._profiler import Profiler
from promptprof._record import InvalidValue, PromptSpec, check_spec, check_tag
from promptprof.collect import otlp
from promptprof.collect.settings import CollectorSettings
from promptprof.integrations._genai import (
    CallFacts,
    GenAIMapping,
    facts_from_span,
    record_facts,
    service_fields,
)

log = structlog.get_logger("promptprof.collect")

TRACES_PATH = "/v1/traces"
_CHECKED_MAX = 4096
STATS_PATH = "/stats"


@dataclass
class ReceiverStats:
    """What the receiver has seen since it started."""

    requests: int = 0
    refused_requests: int = 0
    spans: int = 0
    genai_spans: int = 0
    recorded_spans: int = 0
    ignored_spans: int = 0
    rejected_spans: int = 0
    busy_requests: int = 0


class Receiver:
    """Turns OTLP trace requests into call events on ``profiler``."""

    def __init__(self, profiler: Profiler, settings: CollectorSettings) -> None:
        self.profiler = profiler
        self.settings = settings.collect
        self.mapping: GenAIMapping = settings.genai
        token = self.settings.bearer_token
        self._expected = f"Bearer {token.get_secret_value()}".encode() if token else None
        self.stats = ReceiverStats()
        self._checked: dict[int, tuple[PromptSpec, str | None]] = {}

    def app(self) -> web.Application:
        """The aiohttp application serving the receiver."""
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(TRACES_PATH, self.traces)
        app.router.add_get(STATS_PATH, self.stats_page)
        return app

    async def traces(self, request: web.Request) -> web.Response:
        """``POST /v1/traces``: always an answer, never an exception."""
        self.stats.requests += 1
        kind = otlp.PROTOBUF
        try:
            kind = otlp.media_type(request.content_type)
            self.authorize(request.headers.get("Authorization", ""))
            body = await self._body(request)
            decoded = otlp.decode(body, kind, request.headers.get("Content-Encoding"),
                                  self.settings.max_body_bytes)
            rejected, message = self.take(decoded)
        except otlp.Refused as refused:
            return self._refuse(kind, refused)
        except Exception:  # a bug here must not take the receiver down
            log.exception("promptprof.collect_error")
            return self._refuse(kind, otlp.Refused(500, "internal error"))
        return web.Response(body=otlp.answer(kind, rejected, message), content_type=kind)

    async def stats_page(self, request: web.Request) -> web.Response:
        """``GET /stats``: the receiver's counts and the producer's."""
        stats = {"receiver": asdict(self.stats), "producer": self.profiler.stats()}
        return web.json_response(stats, dumps=_dumps)

    def take(self, request: Any) -> tuple[int, str]:
        """Record the request's GenAI spans; (rejected spans, why the first was rejected)."""
        spans = list(otlp.spans(request))
        self.stats.spans += len(spans)
        buffer = self.profiler.buffer
        if len(buffer) + len(spans) > buffer.capacity:
            self.stats.busy_requests += 1
            raise otlp.Refused(503, "buffer full: retry later")
        rejected, message = 0, ""
        fields_by_resource: dict[int, dict[str, Any]] = {}
        for resource, span in spans:
            facts = facts_from_span(otlp.span_data(span), self.mapping)
            if facts is None:
                self.stats.ignored_spans += 1
                continue
            self.stats.genai_spans += 1
            problem = self._problem(facts)
            if problem is not None:
                rejected += 1
                message = message or f"span {span.name[:80]!r}: {problem}"
                continue
            fields = fields_by_resource.get(id(resource))
            if fields is None:
                fields = fields_by_resource[id(resource)] = service_fields(resource)
            facts.fields = fields
            if record_facts(self.profiler, facts):
                self.stats.recorded_spans += 1
        self.stats.rejected_spans += rejected
        return rejected, message

    def _problem(self, facts: CallFacts) -> str | None:
        """Why the facts cannot become an event (a value InfluxDB cannot store), or None; a
        spec is checked once (the converter hands out one object per identity)."""
        spec = facts.spec
        checked = self._checked.get(id(spec))
        if checked is None or checked[0] is not spec:
            if len(self._checked) >= _CHECKED_MAX:
                self._checked.clear()
            checked = self._checked[id(spec)] = (spec, _invalid(check_spec, spec))
        if checked[1] is not None or facts.error_type is None:
            return checked[1]
        return _invalid(check_tag, "error_type", facts.error_type, MAX_ERROR_TYPE_LEN)

    def authorize(self, header: str) -> None:
        """Refuse (401) a request whose ``Authorization`` value is not the configured token."""
        if self._expected is None:
            return
        if not hmac.compare_digest(header.encode(), self._expected):
            raise otlp.Refused(401, "missing or wrong bearer token")

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise otlp.Refused(
                413, f"body exceeds {self.settings.max_body_bytes} bytes"
            ) from None

    def _refuse(self, kind: str, refused: otlp.Refused) -> web.Response:
        self.stats.refused_requests += 1
        headers = {}
        if refused.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif refused.status == 503:
            headers["Retry-After"] = str(self.settings.retry_after_s)
        return web.Response(
            status=refused.status, body=otlp.error_body(kind, refused.status, refused.message),
            content_type=kind, headers=headers,
        )




def _invalid(check: Callable[..., None], *args: Any) -> str | None:
    """The message of the :class:`InvalidValue` ``check(*args)`` raises, or None."""
    try:
        check(*args)
    except InvalidValue as exc:
        return str(exc)
    return None


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


async def serve(receiver: Receiver, host: str, port: int) -> web.AppRunner:
    """Start serving on ``host:port`` (0: a free port); the caller cleans the runner up."""
    # bodies are inflated by otlp.decode, under the size limit; not by aiohttp
    runner = web.AppRunner(receiver.app(), access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner's first site listens on."""
    server = runner.addresses[0]
    return int(server[1])
