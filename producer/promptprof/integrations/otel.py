"""Profile the LLM calls a service already traces with OpenTelemetry, in process.

::

    from opentelemetry.sdk.trace import TracerProvider
    from promptprof.integrations.otel import GenAISpanProcessor, prompt

    provider = TracerProvider()
    provider.add_span_processor(GenAISpanProcessor())   # beside the service's own exporters
    OpenAIInstrumentor().instrument(tracer_provider=provider)

    with prompt("faq-answer", "v3"):   # GenAI spans started in the block carry the prompt
        client.chat.completions.create(...)

Every finished GenAI client span (chat, text completion, embeddings) becomes a call event with
the fields the client wrappers record (see :mod:`promptprof.integrations._genai` for what is
read). ``on_end`` converts the span and makes one non-blocking enqueue; it never raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from promptprof._profiler import Profiler, get_profiler
from promptprof.integrations._common import (
    PromptOverride,
    _context_override,
    count_internal_error,
    use_prompt,
)
from promptprof.integrations._genai import (
    LABEL_PREFIX,
    PROMPT_ID_ATTRIBUTE,
    PROMPT_VERSION_ATTRIBUTE,
    Attributes,
    GenAIMapping,
    SpanData,
    facts_from_span,
    is_genai,
    record_facts,
)

__all__ = ["GenAISpanProcessor", "PromptAttributesProcessor", "prompt", "prompt_attributes"]


def prompt_attributes(
    prompt_id: str | None = None, version: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The span attributes that name a prompt (``promptprof.prompt.id`` ...)."""
    attributes = {LABEL_PREFIX + key: value for key, value in (labels or {}).items()}
    if prompt_id is not None:
        attributes[PROMPT_ID_ATTRIBUTE] = prompt_id
    if version is not None:
        attributes[PROMPT_VERSION_ATTRIBUTE] = version
    return attributes


@contextmanager
def prompt(
    prompt_id: str | None = None, version: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Attribute the block's LLM calls to a prompt and version.

    Sets the attributes on the current span, and (through
    :func:`promptprof.integrations.use_prompt`, so wrapped clients follow it too) on every
    span started in the block by a tracer provider holding a :class:`GenAISpanProcessor` or a
    :class:`PromptAttributesProcessor`.
    """
    with use_prompt(prompt_id, version, labels):
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(prompt_attributes(prompt_id, version, labels))
        yield


def _override_attributes(layer: PromptOverride) -> dict[str, str]:
    return prompt_attributes(layer.get("prompt_id"), layer.get("version"), layer.get("labels"))


class PromptAttributesProcessor(SpanProcessor):
    """Stamps the prompt of the enclosing :func:`prompt` block on every span it sees start.

    For a service that exports its spans over OTLP (to ``promptprof collect``) rather than
    converting them in process.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Copy the block's prompt onto the starting span (never raises)."""
        try:
            layer = _context_override.get()
            if layer:
                span.set_attributes(_override_attributes(layer))
        except Exception:
            count_internal_error(None, "otel.on_start")


class GenAISpanProcessor(PromptAttributesProcessor):
    """Turns every finished GenAI span into a promptprof call event.

    ``profiler`` defaults to the process-wide one, looked up at each span; ``mapping`` says
    where the prompt id and version come from (default: the ``promptprof.prompt.*``
    attributes, else ``unattributed``/``unknown``). Spans of other kinds are counted in
    ``ignored_spans`` and left alone.
    """

    def __init__(
        self, profiler: Profiler | None = None, mapping: GenAIMapping | None = None
    ) -> None:
        self.profiler = profiler
        self.mapping = mapping or GenAIMapping()
        self.converted_spans = 0
        self.ignored_spans = 0

    def on_end(self, span: ReadableSpan) -> None:
        """Convert and enqueue the span's call (never raises, never blocks)."""
        profiler = self.profiler
        try:
            attributes = span.attributes
            if attributes is None or not is_genai(attributes):
                self.ignored_spans += 1
                return
            profiler = profiler or get_profiler()
            if not profiler.enabled:
                return
            facts = facts_from_span(sdk_span_data(span), self.mapping)
            if facts is not None and record_facts(profiler, facts):
                self.converted_spans += 1
        except Exception:
            count_internal_error(profiler, "otel.on_end")

    def shutdown(self) -> None:
        """Nothing to release: the profiler outlives the tracer provider."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the profiler's buffer (the events of the spans seen so far)."""
        try:
            return (self.profiler or get_profiler()).flush(timeout_millis / 1000)
        except Exception:
            count_internal_error(self.profiler, "otel.force_flush")
            return False


def sdk_span_data(span: ReadableSpan) -> SpanData:
    """The converter's view of an SDK span."""
    events: Any = [
        (event.name, event.timestamp, event.attributes or {}) for event in span.events
    ] if span.events else ()
    return SpanData(
        span.start_time or 0, span.end_time or span.start_time or 0, _attributes(span),
        events, span.status.status_code is StatusCode.ERROR,
    )


def _attributes(span: ReadableSpan) -> Attributes:
    """The span's attributes; the SDK's own dict when it is there (``span.attributes`` is a
    read-only proxy of a locked mapping: a third of the bridge's cost went to its lookups)."""
    raw = getattr(getattr(span, "_attributes", None), "_dict", None)
    return raw if isinstance(raw, dict) else (span.attributes or {})
