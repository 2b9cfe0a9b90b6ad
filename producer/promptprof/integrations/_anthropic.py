"""Profile the official Anthropic client (``anthropic.Anthropic``, ``anthropic.AsyncAnthropic``).

Wrapped: ``messages.create`` (``stream=True`` included), ``messages.parse`` and the
``messages.stream(...)`` context manager. Anthropic's ``input_tokens`` leaves out the tokens
read from and written to the prompt cache; promptprof's input count includes them (as the
OpenTelemetry GenAI conventions do), and the cache reads are also reported as cached tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import anthropic
from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager
from anthropic.types import Message

from promptprof._profiler import Profiler, make_spec
from promptprof._record import TextParts
from promptprof.integrations._common import Api, Tracker, Usage, attr, patch_client, texts_of

AnthropicClientT = TypeVar(
    "AnthropicClientT", bound="anthropic.Anthropic | anthropic.AsyncAnthropic"
)

_DELTA_TEXT_FIELDS = ("text", "partial_json", "thinking")


def wrap_anthropic(
    client: AnthropicClientT, *, prompt_id: str, version: str,
    labels: Mapping[str, str] | None = None, profiler: Profiler | None = None,
) -> AnthropicClientT:
    """Profile every message the client creates or streams, as ``prompt_id``/``version``.

    The client is patched in place and returned (same object, same type); clients made from
    it with ``copy()``/``with_options()`` are profiled too. ``profiler`` defaults to the
    process-wide one, looked up at each call. Per call, pass
    ``promptprof={"prompt_id": ..., "version": ..., "labels": {...}}`` (any subset; removed
    before the request) or use :func:`promptprof.integrations.use_prompt`.
    """
    base = make_spec(prompt_id, version, provider="anthropic", labels=labels)

    def rewrap(new: Any) -> Any:
        return wrap_anthropic(new, prompt_id=prompt_id, version=version, labels=labels,
                              profiler=profiler)

    patch_client(client, _TARGETS, base, profiler, rewrap)
    return client


class MessagesApi(Api):
    """``messages``: system and messages in, content blocks out, usage in start/delta events."""

    provider = "anthropic"
    sync_streams = (anthropic.Stream,)
    async_streams = (anthropic.AsyncStream,)
    sync_managers = (MessageStreamManager,)
    async_managers = (AsyncMessageStreamManager,)
    responses = (Message,)

    def prompt_text(self, request: Mapping[str, Any]) -> TextParts:
        """The text of the request's system prompt and messages."""
        return texts_of(request.get("system"), request.get("messages"))

    def response_text(self, response: Any) -> TextParts:
        """The text of the message's content blocks."""
        return texts_of(attr(response, "content"))

    def read_response(self, tracker: Tracker, response: Any) -> None:
        """Model and usage of a message."""
        model = attr(response, "model")
        if model:
            tracker.model = model
        tracker.usage(_usage(attr(response, "usage")))

    def read_chunk(self, tracker: Tracker, chunk: Any) -> None:
        """A raw stream event: text deltas; usage in ``message_start`` and ``message_delta``."""
        kind = attr(chunk, "type")
        if kind == "content_block_delta":
            delta = attr(chunk, "delta")
            for name in _DELTA_TEXT_FIELDS:
                tracker.content(attr(delta, name))
        elif kind == "message_start":
            message = attr(chunk, "message")
            inp, _, cached = _usage(attr(message, "usage"))
            # the start event's output count is a placeholder: the delta brings the real one
            tracker.usage((inp, None, cached))
            model = attr(message, "model")
            if model:
                tracker.model = model
        elif kind == "message_delta":
            tracker.usage(_usage(attr(chunk, "usage")))


def _usage(usage: Any) -> Usage:
    """Input including cache reads and writes, output, and cache reads."""
    fresh = attr(usage, "input_tokens")
    read = attr(usage, "cache_read_input_tokens")
    written = attr(usage, "cache_creation_input_tokens")
    total = None if fresh is None else fresh + (read or 0) + (written or 0)
    return total, attr(usage, "output_tokens"), read


MESSAGES = MessagesApi()
_TARGETS = [
    (("messages",), "create", MESSAGES),
    (("messages",), "parse", MESSAGES),
    (("messages",), "stream", MESSAGES),
]
