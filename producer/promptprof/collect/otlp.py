"""OTLP/HTTP trace requests: decoding (protobuf or JSON, gzip), spans, and the answers.

Everything OTLP-specific of the receiver is here; decoding uses the ``opentelemetry-proto``
messages. A request that cannot be read raises :class:`Refused` with the HTTP status and a
message for the sender.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from promptprof.integrations._genai import Attributes, SpanData

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MAX_DEPTH = 8


class Refused(Exception):
    """A request the receiver cannot take: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """The request's media type (protobuf or JSON), or :class:`Refused` with 415."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    raise Refused(415, f"content type {kind or 'missing'!r}: send {PROTOBUF} or {JSON}")


def decode(
    body: bytes, kind: str, encoding: str | None, max_bytes: int
) -> ExportTraceServiceRequest:
    """The trace request in ``body`` (``kind`` from :func:`media_type`); gzip bodies are
    inflated up to ``max_bytes`` (beyond: 413)."""
    body = _inflate(body, (encoding or "identity").strip().lower(), max_bytes)
    request = ExportTraceServiceRequest()
    try:
        if kind == PROTOBUF:
            request.ParseFromString(body)
        else:
            json_format.Parse(body, request, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError,
            RecursionError) as exc:
        raise Refused(400, f"not an OTLP trace request ({kind}): {str(exc)[:200]}") from None
    return request


def _inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise Refused(415, f"content encoding {encoding!r}: send gzip or identity")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise Refused(400, f"body is not valid gzip: {exc}") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise Refused(413, f"inflated body exceeds {max_bytes} bytes")
    if not inflater.eof:
        raise Refused(400, "gzip body is truncated")
    return data


def spans(request: ExportTraceServiceRequest) -> Iterator[tuple[Attributes, Span]]:
    """Every span of the request with its resource's attributes."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield resource, span


def span_data(span: Span) -> SpanData:
    """The converter's view of an OTLP span (its attributes converted as they are read)."""
    events: Any = [
        (event.name, event.time_unix_nano, LazyAttributes(event.attributes))
        for event in span.events
    ] if span.events else ()
    return SpanData(
        span.start_time_unix_nano, span.end_time_unix_nano, LazyAttributes(span.attributes),
        events, span.status.code == Status.STATUS_CODE_ERROR,
    )


class LazyAttributes(Mapping[str, Any]):
    """OTLP key-values read as a mapping; a value is converted when it is looked up (the
    converter reads a dozen of a span's attributes, and never the large message texts unless
    it needs them)."""

    __slots__ = ("_raw",)

    def __init__(self, pairs: Any) -> None:
        self._raw: dict[str, AnyValue] = {pair.key: pair.value for pair in pairs}

    def __getitem__(self, key: str) -> Any:
        return value(self._raw[key])

    def get(self, key: str, default: Any = None) -> Any:
        """The converted value of ``key``, or ``default``."""
        raw = self._raw.get(key)
        return default if raw is None else value(raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP key-values as a dict of plain Python values."""
    return {pair.key: value(pair.value) for pair in pairs}


def value(any_value: AnyValue, depth: int = 0) -> Any:
    """The Python value of an OTLP ``AnyValue`` (arrays as tuples, key-value lists as dicts)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        if depth >= _MAX_DEPTH:
            return None
        return tuple(value(item, depth + 1) for item in any_value.array_value.values)
    if kind == "kvlist_value":
        if depth >= _MAX_DEPTH:
            return None
        pairs: list[KeyValue] = list(any_value.kvlist_value.values)
        return {pair.key: value(pair.value, depth + 1) for pair in pairs}
    return getattr(any_value, kind)


def answer(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """The encoded success answer (see :func:`response`)."""
    return _encoded(kind, response(rejected, message))


def response(rejected: int = 0, message: str = "") -> ExportTraceServiceResponse:
    """The success answer, with OTLP's partial success when spans were rejected."""
    answered = ExportTraceServiceResponse()
    if rejected:
        answered.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    return answered


def error_body(kind: str, status: int, message: str) -> bytes:
    """An error answer: a ``google.rpc.Status`` (protobuf), or its JSON form."""
    from google.rpc.status_pb2 import Status as RpcStatus

    rpc = RpcStatus(code=rpc_code(status), message=message)
    return _encoded(kind, rpc)


def _encoded(kind: str, message: Any) -> bytes:
    if kind == JSON:
        return str(json_format.MessageToJson(message, indent=None)).encode()
    return bytes(message.SerializeToString())


def rpc_code(status: int) -> int:
    """The gRPC status code of an HTTP refusal (UNKNOWN for others)."""
    return _RPC_CODES.get(status, 2)


# HTTP status -> gRPC code: INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED, UNAVAILABLE
_RPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 500: 13, 503: 14}
