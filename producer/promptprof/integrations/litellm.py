"""Profile the calls LiteLLM makes, from the SDK or from its proxy, with a LiteLLM callback.

SDK::

    import litellm
    from promptprof.integrations.litellm import PromptprofLogger

    litellm.callbacks = [PromptprofLogger(prompt_id="faq-answer", version="v3")]
    litellm.completion(model="openai/gpt-4o-mini", messages=[...],
                       metadata={"promptprof": {"version": "v4"}})   # per call, optional

Proxy (``config.yaml``)::

    litellm_settings:
      callbacks: promptprof.integrations.litellm.promptprof_callback

LiteLLM reports a call once it is over (its start, end and first-chunk times, usage, the
exception of a failure); the callback turns that into a call event with the fields the client
wrappers record. The prompt comes from the request's ``metadata["promptprof"]`` (keys
``prompt_id``, ``version``, ``labels``), else from the logger's defaults, else the
``unattributed``/``unknown`` fallback. Callbacks never raise into LiteLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from promptprof._profiler import Profiler, get_profiler
from promptprof.integrations._common import attr, count_internal_error
from promptprof.integrations._genai import (
    CallFacts,
    GenAIMapping,
    error_name,
    provider_name,
    record_facts,
    spec_for,
)

__all__ = ["PromptprofLogger", "promptprof_callback"]

_NS = 1_000_000_000


class PromptprofLogger(CustomLogger):
    """A LiteLLM callback recording every completion as a promptprof call event.

    ``prompt_id``/``version``/``labels`` name calls whose metadata does not; ``profiler``
    defaults to the process-wide one, looked up at each call.
    """

    def __init__(
        self, prompt_id: str | None = None, version: str | None = None,
        labels: Mapping[str, str] | None = None, profiler: Profiler | None = None,
    ) -> None:
        super().__init__()
        fallback = GenAIMapping()
        self.prompt_id = prompt_id or fallback.default_prompt_id
        self.version = version or fallback.default_version
        self.labels = dict(labels or {})
        self.profiler = profiler

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """A finished call (a stream: once it was read to the end)."""
        self._record(kwargs, response_obj, None)

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """A failed call: its error type is the exception's class name, as the wrappers'."""
        self._record(kwargs, None, kwargs.get("exception"))

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """The async client's finished call."""
        self._record(kwargs, response_obj, None)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """The async client's failed call."""
        self._record(kwargs, None, kwargs.get("exception"))

    def _record(self, kwargs: dict[str, Any], response: Any, error: Any) -> None:
        profiler = self.profiler
        try:
            profiler = profiler or get_profiler()
            if profiler.enabled:
                record_facts(profiler, self._facts(kwargs, response, error))
        except Exception:
            count_internal_error(profiler, "litellm")

    def _facts(self, kwargs: dict[str, Any], response: Any, error: Any) -> CallFacts:
        logged: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
        override = _override(kwargs, logged)
        labels = {**self.labels, **override.get("labels", {})}
        spec = spec_for(
            override.get("prompt_id", self.prompt_id), override.get("version", self.version),
            str(kwargs.get("model") or logged.get("model") or "unknown"),
            provider_name(kwargs.get("custom_llm_provider") or logged.get("custom_llm_provider")),
            "chat", tuple(sorted(labels.items())),
        )
        start = _ns(logged.get("startTime"))
        end = _ns(logged.get("endTime")) or start
        first = _ns(logged.get("completionStartTime")) if kwargs.get("stream") else None
        usage = attr(response, "usage")
        return CallFacts(
            spec, start, end, first, attr(response, "model"),
            (attr(usage, "prompt_tokens"), attr(usage, "completion_tokens"),
             attr(usage, "prompt_tokens_details", "cached_tokens")) if usage else
            (None, None, None),
            error_name(type(error).__name__) if error is not None else None,
        )


def _override(kwargs: Mapping[str, Any], logged: Mapping[str, Any]) -> dict[str, Any]:
    """The request's ``metadata["promptprof"]`` (SDK), or the proxy's requester metadata's."""
    for metadata in (
        attr_get(kwargs, "litellm_params", "metadata"),
        attr_get(logged, "metadata", "requester_metadata"),
    ):
        found = metadata.get("promptprof") if isinstance(metadata, Mapping) else None
        if isinstance(found, Mapping):
            return {k: v for k, v in found.items() if k in ("prompt_id", "version", "labels")}
    return {}


def attr_get(mapping: Mapping[str, Any], *keys: str) -> Any:
    """``mapping[a][b]`` for ``keys`` (a, b), or ``None`` when any step is missing."""
    value: Any = mapping
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _ns(seconds: Any) -> int:
    """Seconds since the epoch (LiteLLM's floats) as ns; 0 when missing."""
    return int(seconds * _NS) if isinstance(seconds, int | float) else 0


promptprof_callback = PromptprofLogger()
"""The instance a LiteLLM proxy's ``callbacks`` setting names (the process-wide profiler)."""
