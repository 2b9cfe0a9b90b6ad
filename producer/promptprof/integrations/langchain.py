"""Profile the model calls of LangChain chains and agents with a callback handler.

::

    from langchain_openai import ChatOpenAI
    from promptprof.integrations.langchain import PromptprofCallbackHandler

    handler = PromptprofCallbackHandler(prompt_id="faq-answer", version="v3")
    llm = ChatOpenAI(model="gpt-4o-mini", callbacks=[handler], stream_usage=True)
    llm.invoke("...")                                                   # profiled
    llm.invoke("...", config={"metadata": {"promptprof": {"version": "v4"}}})

Each chat-model (or completion-model) run is measured from its start callback to its end or
error callback, with the first streamed token as the time to first token; usage and the
answering model come from the result, as the client wrappers read them (tokens are counted
locally when the result has none). ``promptprof.integrations.use_prompt`` blocks and the run's
``metadata["promptprof"]`` override the handler's prompt. Callbacks never raise into LangChain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from promptprof._profiler import Profiler, make_spec
from promptprof._record import TextParts
from promptprof.integrations._common import (
    OVERRIDE_KWARG,
    Api,
    Instrument,
    Tracker,
    attr,
    count_internal_error,
    texts_of,
)

__all__ = ["PromptprofCallbackHandler"]

_MAX_OPEN_RUNS = 10_000


class LangChainApi(Api):
    """What a LangChain ``LLMResult`` tells: the model, usage, and the generated text."""

    responses = (LLMResult,)

    def __init__(self, provider: str, operation: str) -> None:
        self.provider, self.operation = provider, operation

    def prompt_text(self, request: Mapping[str, Any]) -> TextParts:
        """The text of the run's messages (or prompts)."""
        return texts_of(request.get("messages"))

    def response_text(self, response: Any) -> TextParts:
        """The text of every generation."""
        parts = TextParts()
        for batch in response.generations:
            for generation in batch:
                if generation.text:
                    parts.add(generation.text)
        return parts

    def read_response(self, tracker: Tracker, response: Any) -> None:
        """Model and usage from the first generation's message, else from ``llm_output``."""
        generation = response.generations[0][0] if response.generations and \
            response.generations[0] else None
        message = attr(generation, "message")
        metadata = attr(message, "response_metadata") or {}
        output = response.llm_output or {}
        model = metadata.get("model_name") or output.get("model_name")
        if model:
            tracker.model = model
        usage = attr(message, "usage_metadata")
        if usage:
            details = usage.get("input_token_details") or {}
            tracker.usage((usage.get("input_tokens"), usage.get("output_tokens"),
                           details.get("cache_read")))
            return
        counts = output.get("token_usage") or {}
        if counts:
            cached = (counts.get("prompt_tokens_details") or {}).get("cached_tokens")
            tracker.usage((counts.get("prompt_tokens"), counts.get("completion_tokens"), cached))

    def read_chunk(self, tracker: Tracker, chunk: Any) -> None:
        """A streamed token."""
        tracker.content(chunk)


class PromptprofCallbackHandler(BaseCallbackHandler):
    """Records every chat-model and completion-model run as a promptprof call event."""

    def __init__(
        self, prompt_id: str = "langchain", version: str = "1",
        labels: Mapping[str, str] | None = None, profiler: Profiler | None = None,
    ) -> None:
        self.base = make_spec(prompt_id, version, labels=labels)
        self.profiler = profiler
        self._instruments: dict[tuple[str, str], Instrument] = {}
        self._runs: dict[UUID, Tracker] = {}

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID,
        metadata: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        """A chat model run starts."""
        self._begin(run_id, "chat", messages, metadata, kwargs)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
        metadata: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        """A completion model run starts."""
        self._begin(run_id, "text_completion", prompts, metadata, kwargs)

    def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """A streamed token (or content blocks): the first text marks the first token."""
        tracker = self._runs.get(run_id)
        if tracker is not None:
            tracker.chunk(token)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """The run answered."""
        tracker = self._runs.pop(run_id, None)
        if tracker is not None:
            tracker.complete(response)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """The run failed: the error type is the provider SDK's exception class, as the
        wrappers record it (LangChain re-raises ``openai.RateLimitError`` as its subclass
        ``OpenAIRateLimitError``)."""
        tracker = self._runs.pop(run_id, None)
        if tracker is not None:
            try:
                tracker.call.set_error(provider_error_name(error))
            except Exception:
                count_internal_error(self.profiler, "langchain.error")
            tracker.finish()

    def _begin(
        self, run_id: UUID, operation: str, messages: Any, metadata: dict[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        try:
            metadata = metadata or {}
            params = kwargs.get("invocation_params") or {}
            provider = str(metadata.get("ls_provider") or "unknown")
            request: dict[str, Any] = {
                "model": params.get("model") or params.get("model_name")
                or metadata.get("ls_model_name"),
                "messages": messages,
            }
            override = metadata.get(OVERRIDE_KWARG)
            if isinstance(override, Mapping):
                request[OVERRIDE_KWARG] = dict(override)
            tracker = self._instrument(provider, operation).begin(request)
            if tracker is not None:
                if len(self._runs) >= _MAX_OPEN_RUNS:  # runs that never ended: forget them
                    self._runs.clear()
                    count_internal_error(self.profiler, "langchain.open_runs")
                self._runs[run_id] = tracker
        except Exception:
            count_internal_error(self.profiler, "langchain.start")

    def _instrument(self, provider: str, operation: str) -> Instrument:
        key = (provider, operation)
        instrument = self._instruments.get(key)
        if instrument is None:
            instrument = Instrument(LangChainApi(provider, operation), self.base, self.profiler)
            self._instruments[key] = instrument
        return instrument


def provider_error_name(error: BaseException) -> str:
    """The name of the error's nearest class that is not LangChain's own."""
    for cls in type(error).__mro__:
        if not cls.__module__.startswith("langchain"):
            return cls.__name__
    return type(error).__name__
