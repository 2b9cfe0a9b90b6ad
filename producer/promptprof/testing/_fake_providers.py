"""A local HTTP server answering like the OpenAI and Anthropic APIs, for tests and demos.

Point the official clients at it and they work unchanged::

    with FakeProviderServer() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)

Routes: ``POST /v1/chat/completions``, ``POST /v1/responses`` (OpenAI) and ``POST /v1/messages``
(Anthropic), each as JSON or, with ``"stream": true``, as server-sent events in the provider's
wire format (OpenAI chat streams carry usage in a last chunk only when the request asked for
``stream_options={"include_usage": true}``). Every request gets the next scripted
:class:`FakeReply` (see :meth:`FakeProviderServer.script`), else ``server.default``; a reply can
be an error status with the provider's error JSON, omit usage, pace its chunks, or fail
mid-stream. Received requests are kept in ``server.requests``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

DEFAULT_TEXT = "Paris is the capital of France."

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

Event = tuple[str | None, dict[str, Any]]
"""One server-sent event: its ``event:`` name (or ``None``) and its JSON data."""


@dataclass(frozen=True)
class FakeReply:
    """How the fake provider answers one request.

    ``input_tokens`` counts every input token, cached ones included (promptprof's convention);
    the Anthropic format reports ``input_tokens - cached_tokens`` as its ``input_tokens``.
    """

    text: str = DEFAULT_TEXT
    status: int = 200
    model: str | None = None  # the answering model; default: the requested one
    input_tokens: int = 25
    output_tokens: int = 9
    cached_tokens: int = 0
    usage: bool = True  # False: answer without any usage fields
    delay_s: float = 0.0  # pause before answering (to trigger client timeouts)
    chunk_delay_s: float = 0.002  # pause before each streamed event
    stream_error_after: int | None = None  # streams: send an error event after N text chunks
    error_message: str = "simulated failure"


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake provider received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _State:
    default: FakeReply
    script: deque[FakeReply] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self) -> FakeReply:
        with self.lock:
            return self.script.popleft() if self.script else self.default


class FakeProviderServer:
    """A threaded HTTP server on a free loopback port speaking the providers' wire formats."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, default: FakeReply | None = None
    ) -> None:
        self._address = (host, port)
        self._state = _State(default or FakeReply())
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def default(self) -> FakeReply:
        """The reply used when nothing is scripted."""
        return self._state.default

    @default.setter
    def default(self, reply: FakeReply) -> None:
        self._state.default = reply

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, oldest first."""
        return self._state.requests

    def script(self, *replies: FakeReply) -> None:
        """Answer the next requests with ``replies``, in order, then with ``default`` again."""
        with self._state.lock:
            self._state.script.extend(replies)

    def reset(self) -> None:
        """Forget scripted replies and recorded requests; restore the default reply."""
        with self._state.lock:
            self._state.script.clear()
            self._state.requests.clear()
            self._state.default = FakeReply()

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("the fake provider server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI``."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic``."""
        return self.url

    def start(self) -> Self:
        """Listen and serve in a daemon thread."""
        httpd = _HTTPServer(self._address, _Handler)
        httpd.state = self._state
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="fake-providers", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_POST(self) -> None:
        """Answer one API request."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        path = self.path.split("?", 1)[0]
        state = self.server.state
        with state.lock:
            state.requests.append(RecordedRequest("POST", path, dict(self.headers), body))
        route = _ROUTES.get(path)
        if route is None:
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        reply = state.next_reply()
        reply = replace(reply, model=reply.model or str(body.get("model") or "fake-model"))
        time.sleep(reply.delay_s)
        try:
            route(self, reply, body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a timeout)
            self.close_connection = True

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.end_headers()
        self.wfile.write(data)

    def _events(self, reply: FakeReply, events: Iterator[Event]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.close_connection = True
        for name, data in events:
            time.sleep(reply.chunk_delay_s)
            head = f"event: {name}\n" if name else ""
            payload = data.get("_raw") or json.dumps(data)
            self.wfile.write(f"{head}data: {payload}\n\n".encode())
            self.wfile.flush()

    # -- OpenAI ---------------------------------------------------------------------------

    def openai_chat(self, reply: FakeReply, body: dict[str, Any]) -> None:
        """``/v1/chat/completions``."""
        if reply.status != 200:
            self._json(reply.status, _openai_error(reply))
        elif body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            self._events(reply, _openai_chat_events(reply, include))
        else:
            self._json(200, _openai_chat_completion(reply))

    def openai_responses(self, reply: FakeReply, body: dict[str, Any]) -> None:
        """``/v1/responses``."""
        if reply.status != 200:
            self._json(reply.status, _openai_error(reply))
        elif body.get("stream"):
            self._events(reply, _openai_response_events(reply))
        else:
            self._json(200, _openai_response(reply, "completed"))

    # -- Anthropic ------------------------------------------------------------------------

    def anthropic_messages(self, reply: FakeReply, body: dict[str, Any]) -> None:
        """``/v1/messages``."""
        if reply.status != 200:
            self._json(reply.status, _anthropic_error(reply))
        elif body.get("stream"):
            self._events(reply, _anthropic_events(reply))
        else:
            self._json(200, _anthropic_message(reply, reply.text, final=True))


_ROUTES = {
    "/v1/chat/completions": _Handler.openai_chat,
    "/v1/responses": _Handler.openai_responses,
    "/v1/messages": _Handler.anthropic_messages,
}


def split_text(text: str) -> list[str]:
    """The chunks a stream sends: words with their trailing whitespace."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error")


def _openai_error(reply: FakeReply) -> dict[str, Any]:
    code = "rate_limit_exceeded" if reply.status == 429 else None
    error_type = _error_type(reply.status)
    return {"error": {"message": reply.error_message, "type": error_type, "param": None,
                      "code": code}}


def _openai_usage(reply: FakeReply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
    }


def _openai_chat_completion(reply: FakeReply) -> dict[str, Any]:
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.text, "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }],
    }
    if reply.usage:
        completion["usage"] = _openai_usage(reply)
    return completion


def _openai_chat_events(reply: FakeReply, include_usage: bool) -> Iterator[Event]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
    }
    usage_field = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return None, {**base, "choices": [choice], **usage_field}

    yield chunk({"role": "assistant", "content": ""})
    for index, piece in enumerate(split_text(reply.text)):
        if reply.stream_error_after is not None and index == reply.stream_error_after:
            yield None, {"error": {"message": reply.error_message, "type": "server_error"}}
            return
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if include_usage and reply.usage:
        yield None, {**base, "choices": [], "usage": _openai_usage(reply)}
    yield None, {"_raw": "[DONE]"}


def _openai_response(reply: FakeReply, status: str, text: str | None = None) -> dict[str, Any]:
    output_text = reply.text if text is None else text
    output = [{
        "type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": output_text, "annotations": []}],
    }] if output_text else []
    response: dict[str, Any] = {
        "id": "resp_fake", "object": "response", "created_at": int(time.time()),
        "status": status, "model": reply.model, "output": output, "error": None,
        "incomplete_details": None, "instructions": None, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [], "usage": None,
    }
    if reply.usage and status == "completed":
        response["usage"] = {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": reply.input_tokens + reply.output_tokens,
        }
    return response


def _openai_response_events(reply: FakeReply) -> Iterator[Event]:
    sequence = iter(range(1_000_000))

    def event(kind: str, **data: Any) -> Event:
        return kind, {"type": kind, "sequence_number": next(sequence), **data}

    yield event("response.created", response=_openai_response(reply, "in_progress", ""))
    for index, piece in enumerate(split_text(reply.text)):
        if reply.stream_error_after is not None and index == reply.stream_error_after:
            yield event("error", code="server_error", message=reply.error_message, param=None)
            return
        yield event("response.output_text.delta", item_id="msg_fake", output_index=0,
                    content_index=0, delta=piece, logprobs=[])
    yield event("response.completed", response=_openai_response(reply, "completed"))


def _anthropic_error(reply: FakeReply) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _error_type(reply.status), "message": reply.error_message},
        "request_id": f"req_{uuid.uuid4().hex[:12]}",
    }


def _anthropic_usage(reply: FakeReply, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens - reply.cached_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _anthropic_message(reply: FakeReply, text: str, *, final: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": reply.model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": "end_turn" if final else None, "stop_sequence": None,
    }
    if reply.usage:
        message["usage"] = _anthropic_usage(reply, reply.output_tokens if final else 1)
    return message


def _anthropic_events(reply: FakeReply) -> Iterator[Event]:
    yield "message_start", {"type": "message_start",
                            "message": _anthropic_message(reply, "", final=False)}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    yield "ping", {"type": "ping"}
    for index, piece in enumerate(split_text(reply.text)):
        if reply.stream_error_after is not None and index == reply.stream_error_after:
            error = {"type": "overloaded_error", "message": reply.error_message}
            yield "error", {"type": "error", "error": error}
            return
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": piece}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    delta: dict[str, Any] = {
        "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if reply.usage:
        delta["usage"] = {"output_tokens": reply.output_tokens}
    yield "message_delta", delta
    yield "message_stop", {"type": "message_stop"}
