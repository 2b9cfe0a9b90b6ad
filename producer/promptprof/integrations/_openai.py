"""Profile the official OpenAI client (``openai.OpenAI``, ``openai.AsyncOpenAI`` and subclasses).

Wrapped: ``chat.completions.create`` and ``.parse``, ``responses.create`` and ``.parse``,
streaming included. Usage comes from the response, or from the final chunk of a chat stream
requested with ``stream_options={"include_usage": True}``; without it the tokens are counted
locally and marked estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from promptprof._profiler import Profiler, make_spec
from promptprof._record import TextParts
from promptprof.integrations._common import Api, Tracker, Usage, attr, patch_client, texts_of

OpenAIClientT = TypeVar("OpenAIClientT", bound="openai.OpenAI | openai.AsyncOpenAI")

_RESPONSE_TEXT_DELTAS = frozenset({
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
})


def wrap_openai(
    client: OpenAIClientT, *, prompt_id: str, version: str,
    labels: Mapping[str, str] | None = None, profiler: Profiler | None = None,
) -> OpenAIClientT:
    """Profile every chat completion and response the client makes, as ``prompt_id``/``version``.

    The client is patched in place and returned (same object, same type); clients made from
    it with ``copy()``/``with_options()`` are profiled too. ``profiler`` defaults to the
    process-wide one, looked up at each call. Per call, pass
    ``promptprof={"prompt_id": ..., "version": ..., "labels": {...}}`` (any subset; removed
    before the request) or use :func:`promptprof.integrations.use_prompt`.
    """
    base = make_spec(prompt_id, version, provider="openai", labels=labels)

    def rewrap(new: Any) -> Any:
        return wrap_openai(new, prompt_id=prompt_id, version=version, labels=labels,
                           profiler=profiler)

    patch_client(client, _TARGETS, base, profiler, rewrap)
    return client


class _OpenAIApi(Api):
    provider = "openai"
    sync_streams = (openai.Stream,)
    async_streams = (openai.AsyncStream,)


class ChatCompletionsApi(_OpenAIApi):
    """``chat.completions``: messages in, choices out, usage in the last chunk of a stream."""

    responses = (ChatCompletion,)

    def prompt_text(self, request: Mapping[str, Any]) -> TextParts:
        """The text of the request's messages."""
        return texts_of(request.get("messages"))

    def response_text(self, response: Any) -> TextParts:
        """The text of every choice's message (content, refusal, tool-call arguments)."""
        parts = TextParts()
        for choice in attr(response, "choices") or ():
            for text in _message_texts(attr(choice, "message")):
                parts.add(text)
        return parts

    def read_response(self, tracker: Tracker, response: Any) -> None:
        """Model and usage of a completion (or of a chunk: the same fields)."""
        model = getattr(response, "model", None)
        if model:
            tracker.model = model
        usage = getattr(response, "usage", None)
        if usage is not None:
            tracker.usage(_usage(usage, "prompt_tokens", "completion_tokens",
                                 "prompt_tokens_details"))

    def read_chunk(self, tracker: Tracker, chunk: Any) -> None:
        """A ``ChatCompletionChunk``: deltas of the choices, and usage on the last chunk."""
        self.read_response(tracker, chunk)
        for choice in getattr(chunk, "choices", None) or ():
            for text in _message_texts(getattr(choice, "delta", None)):
                tracker.content(text)


class ResponsesApi(_OpenAIApi):
    """``responses``: instructions and input in, output items out, usage at completion."""

    responses = (Response,)

    def prompt_text(self, request: Mapping[str, Any]) -> TextParts:
        """The text of the request's instructions and input."""
        return texts_of(request.get("instructions"), request.get("input"))

    def response_text(self, response: Any) -> TextParts:
        """The response's output text."""
        return texts_of(attr(response, "output_text"))

    def read_response(self, tracker: Tracker, response: Any) -> None:
        """Model, usage, and the error of a failed response."""
        model = attr(response, "model")
        if model:
            tracker.model = model
        usage = attr(response, "usage")
        if usage is not None:
            tracker.usage(_usage(usage, "input_tokens", "output_tokens", "input_tokens_details"))
        if attr(response, "status") == "failed":
            tracker.call.set_error(attr(response, "error", "code") or "ResponseFailed")

    def read_chunk(self, tracker: Tracker, chunk: Any) -> None:
        """A response stream event: text deltas, and the response in lifecycle events."""
        kind = attr(chunk, "type")
        if kind in _RESPONSE_TEXT_DELTAS:
            tracker.content(attr(chunk, "delta"))
        elif kind == "error":
            tracker.call.set_error(attr(chunk, "code") or "StreamError")
        else:
            response = attr(chunk, "response")
            if response is not None:
                self.read_response(tracker, response)


def _usage(usage: Any, input_name: str, output_name: str, details_name: str) -> Usage:
    """OpenAI's input counts already include the cached tokens."""
    return (
        attr(usage, input_name), attr(usage, output_name),
        attr(usage, details_name, "cached_tokens"),
    )


def _message_texts(message: Any) -> list[str]:
    """Texts of a message or a delta: content, refusal, and tool-call arguments.

    Read at every streamed chunk, so plain ``getattr`` rather than :func:`attr`.
    """
    texts: list[str] = []
    if message is None:
        return texts
    for text in (getattr(message, "content", None), getattr(message, "refusal", None)):
        if isinstance(text, str) and text:
            texts.append(text)
    for tool_call in getattr(message, "tool_calls", None) or ():
        arguments = attr(tool_call, "function", "arguments")
        if isinstance(arguments, str) and arguments:
            texts.append(arguments)
    return texts


CHAT_COMPLETIONS = ChatCompletionsApi()
RESPONSES = ResponsesApi()
_TARGETS = [
    (("chat", "completions"), "create", CHAT_COMPLETIONS),
    (("chat", "completions"), "parse", CHAT_COMPLETIONS),
    (("responses",), "create", RESPONSES),
    (("responses",), "parse", RESPONSES),
]
