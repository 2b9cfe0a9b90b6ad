"""OTLP/gRPC traces (``TraceService/Export``) into the HTTP receiver's
:class:`~promptprof.collect.server.Receiver`.

Served on ``collect.grpc_port`` when it is set (the OTLP default is 4317). The same rules as over
HTTP: bearer token in the ``authorization`` metadata, ``max_body_bytes`` as the largest message,
partial success for rejected spans, ``UNAVAILABLE`` (retryable) while the buffer cannot hold a
request.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from promptprof.collect import otlp
from promptprof.collect.server import Receiver

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP trace service, answering from ``receiver``."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def Export(
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        """Take the request's GenAI spans; refuse it with the matching gRPC status."""
        receiver = self.receiver
        receiver.stats.requests += 1
        try:
            metadata = dict(context.invocation_metadata() or ())
            receiver.authorize(str(metadata.get("authorization", "")))
            rejected, message = receiver.take(request)
        except otlp.Refused as refused:
            receiver.stats.refused_requests += 1
            code = _CODES.get(otlp.rpc_code(refused.status), grpc.StatusCode.UNKNOWN)
            await context.abort(code, refused.message)
            raise  # abort raises; this line is never reached
        return otlp.response(rejected, message)


async def serve_grpc(receiver: Receiver, host: str, port: int) -> tuple[Any, int]:
    """Start the gRPC server on ``host:port`` (0: a free port); (the server, its port)."""
    limit = receiver.settings.max_body_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
    add: Any = trace_service_pb2_grpc.add_TraceServiceServicer_to_server  # generated, untyped
    add(TraceService(receiver), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, int(bound)
