"""GenAI spans, and other after-the-fact records of a call, turned into promptprof calls.

The in-process span processor (:mod:`promptprof.integrations.otel`), the OTLP receiver
(:mod:`promptprof.collect`) and the LiteLLM callback learn about a call once it is over. Each
describes it as :class:`CallFacts`; :func:`record_facts` hands it to the profiler as a
:class:`~promptprof._record.Call`, so the sender builds the same event fields, cost included,
as for the client wrappers.

:func:`facts_from_span` reads the OpenTelemetry GenAI semantic conventions under the names the
maintained instrumentations emit today, old and new (the table is in the README, section
"OpenTelemetry, LiteLLM and LangChain"); a span of another kind gives ``None``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field

from promptprof._event import MAX_ERROR_TYPE_LEN, MAX_SERVICE_LEN, tag_problem
from promptprof._profiler import Profiler, make_spec
from promptprof._record import PromptSpec
from promptprof.integrations._common import Usage

Attributes = Mapping[str, Any]

PROMPT_ID_ATTRIBUTE = "promptprof.prompt.id"
PROMPT_VERSION_ATTRIBUTE = "promptprof.prompt.version"
LABEL_PREFIX = "promptprof.label."

# The first name present wins: the newest convention first.
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
OPERATION = ("gen_ai.operation.name", "llm.request.type")
REQUEST_MODEL = ("gen_ai.request.model",)
RESPONSE_MODEL = ("gen_ai.response.model",)
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                "llm.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                 "llm.usage.completion_tokens")
CACHED_TOKENS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
TTFT_SECONDS = ("gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token")
CHUNK_EVENTS = frozenset({"gen_ai.content.completion.chunk", "llm.content.completion.chunk"})
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
LEGACY_PROMPT = re.compile(r"gen_ai\.prompt\.\d+\.content")
LEGACY_COMPLETION = re.compile(r"gen_ai\.completion\.\d+\.content")

# Client inference operations, and the older names of OpenLLMetry's ``llm.request.type``.
OPERATIONS = {
    "chat": "chat", "text_completion": "text_completion", "completion": "text_completion",
    "embeddings": "embeddings", "embedding": "embeddings", "generate_content": "generate_content",
}
_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")
_SPEC_CACHE = 4096


class GenAIMapping(BaseModel):
    """Where a span's prompt identity comes from, and the fallback when it carries none.

    The first attribute present in ``prompt_id_attributes`` (and ``version_attributes``) names
    the prompt; attributes starting with ``label_prefix`` become labels. Without one, the call
    is recorded as ``default_prompt_id`` / ``default_version``.
    """

    prompt_id_attributes: tuple[str, ...] = (PROMPT_ID_ATTRIBUTE,)
    version_attributes: tuple[str, ...] = (PROMPT_VERSION_ATTRIBUTE,)
    label_prefix: str = LABEL_PREFIX
    default_prompt_id: str = Field(default="unattributed", min_length=1)
    default_version: str = Field(default="unknown", min_length=1)


@dataclass(slots=True)  # not frozen: a frozen init costs microseconds per span
class SpanData:
    """What the converter reads of a finished span, whatever it came from (SDK or OTLP).

    ``events`` are (name, time in ns since the epoch, attributes).
    """

    start_ns: int
    end_ns: int
    attributes: Attributes
    events: Sequence[tuple[str, int, Attributes]] = ()
    error: bool = False


@dataclass(slots=True)
class CallFacts:
    """A call known once it is over; times in ns since the epoch, tokens as the API told.

    ``texts`` gives (prompt text, response text) when asked: they are read only to count
    missing tokens or when ``capture_text`` is on. ``fields`` replace the built event's
    (the sending service, its environment).
    """

    spec: PromptSpec
    start_ns: int
    end_ns: int
    first_token_ns: int | None = None
    response_model: str | None = None
    usage: Usage = (None, None, None)
    error_type: str | None = None
    texts: Callable[[], tuple[str, str]] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def record_facts(profiler: Profiler, facts: CallFacts) -> bool:
    """Hand a finished call to ``profiler`` (never blocks); False when sampled out or off."""
    call = profiler.start_call(facts.spec)
    if call is None:
        return False
    call.start_ns = facts.start_ns
    call.first_token_ns = facts.first_token_ns
    call.response_model = facts.response_model
    call.error_type = facts.error_type
    inp, out, cached = facts.usage
    has_usage = inp is not None or out is not None
    if has_usage:
        call.set_usage(inp, out, cached)
    texts = facts.texts
    # as the wrappers: a call that failed without an answer has no tokens to count
    answered = has_usage or facts.error_type is None
    if texts is not None and answered and (
        inp is None or out is None or profiler.settings.producer.capture_text
    ):
        call.set_text(*texts())
    call.fields = {"start_time_unix_nano": facts.start_ns, **facts.fields}
    call.end_ns = max(facts.end_ns, facts.start_ns)
    profiler.enqueue(call)
    return True


@lru_cache(maxsize=_SPEC_CACHE)
def spec_for(
    prompt_id: str, version: str, model: str, provider: str, operation: str,
    labels: tuple[tuple[str, str], ...] = (),
) -> PromptSpec:
    """One :class:`PromptSpec` per identity (the sender caches its event template per spec)."""
    return make_spec(prompt_id, version, model, provider, operation, dict(labels))


def is_genai(attributes: Attributes) -> bool:
    """Whether a span describes a client inference call (chat, completion, embeddings)."""
    return _inference(attributes) is not None


def _inference(attributes: Attributes) -> tuple[str, Any] | None:
    """(operation, provider) of a client inference span, else ``None``."""
    operation = first(attributes, OPERATION)
    provider = first(attributes, PROVIDER)
    if isinstance(operation, str) and operation in OPERATIONS and provider is not None:
        return OPERATIONS[operation], provider
    return None


def facts_from_span(span: SpanData, mapping: GenAIMapping) -> CallFacts | None:
    """The call a GenAI span describes, or ``None`` for any other span."""
    attributes = span.attributes
    inference = _inference(attributes)
    if inference is None:
        return None
    operation, provider = inference
    response_model = _text(first(attributes, RESPONSE_MODEL))
    model = _text(first(attributes, REQUEST_MODEL)) or response_model or "unknown"
    spec = spec_for(
        *prompt_identity(attributes, mapping), model, provider_name(provider),
        operation, labels_of(attributes, mapping.label_prefix),
    )
    return CallFacts(
        spec, span.start_ns, span.end_ns, _first_token_ns(span), response_model,
        (_count(first(attributes, INPUT_TOKENS)), _count(first(attributes, OUTPUT_TOKENS)),
         _count(first(attributes, CACHED_TOKENS))),
        _span_error(span), lambda: span_texts(attributes),
    )


def first(attributes: Attributes, names: Sequence[str]) -> Any:
    """The value of the first of ``names`` present in ``attributes``, else ``None``."""
    for name in names:
        value = attributes.get(name)
        if value is not None:
            return value
    return None


def prompt_identity(attributes: Attributes, mapping: GenAIMapping) -> tuple[str, str]:
    """(prompt id, version) from the mapped attributes, or the mapping's fallback."""
    prompt_id = _text(first(attributes, mapping.prompt_id_attributes))
    version = _text(first(attributes, mapping.version_attributes))
    return prompt_id or mapping.default_prompt_id, version or mapping.default_version


def labels_of(attributes: Attributes, prefix: str) -> tuple[tuple[str, str], ...]:
    """The ``prefix``-ed attributes as sorted (key, value) label pairs."""
    if not prefix:
        return ()
    return tuple(sorted(
        (name[len(prefix):], str(attributes[name])) for name in attributes
        if name.startswith(prefix) and len(name) > len(prefix)
    ))


def provider_name(value: Any) -> str:
    """The provider in promptprof's spelling (``OpenAI`` of older instrumentations: ``openai``)."""
    text = _text(value)
    return text.lower() if text else "unknown"


def error_name(value: Any) -> str | None:
    """An error type as the wrappers record it: the exception class's bare name.

    Instrumentations write ``RateLimitError``, ``openai.RateLimitError`` or even
    ``<class 'openai.RateLimitError'>``; all three give ``RateLimitError``.
    """
    text = _text(value)
    if not text:
        return None
    match = _CLASS_REPR.match(text)
    if match:
        text = match.group(1)
    return text.rsplit(".", 1)[-1][:MAX_ERROR_TYPE_LEN] or None


def service_fields(resource: Attributes) -> dict[str, Any]:
    """Event fields naming the sending service and its environment, from resource attributes
    (a service name that cannot be an InfluxDB tag is left to the collector's own)."""
    fields: dict[str, Any] = {}
    service = resource.get("service.name")
    if tag_problem(service, MAX_SERVICE_LEN) is None:
        fields["service.name"] = service
    environment = first(resource, ("deployment.environment.name", "deployment.environment"))
    if isinstance(environment, str) and len(environment) <= 64:
        fields["deployment.environment.name"] = environment
    return fields


def span_texts(attributes: Attributes) -> tuple[str, str]:
    """The prompt and response text an instrumentation captured (empty when it captured none)."""
    prompt = "\n".join(_message_texts(attributes.get(INPUT_MESSAGES)))
    response = "".join(_message_texts(attributes.get(OUTPUT_MESSAGES)))
    if not prompt:
        prompt = "\n".join(_legacy_texts(attributes, LEGACY_PROMPT))
    if not response:
        response = "".join(_legacy_texts(attributes, LEGACY_COMPLETION))
    return prompt, response


def _message_texts(value: Any) -> Iterator[str]:
    """Texts of the convention's JSON messages: ``[{"role", "parts": [{"type", "content"}]}]``."""
    if not isinstance(value, str) or not value:
        return
    try:
        messages = json.loads(value)
    except ValueError:
        return
    for message in messages if isinstance(messages, list) else ():
        parts = message.get("parts") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else ():
            content = part.get("content") if isinstance(part, dict) else None
            if isinstance(content, str) and content:
                yield content


def _legacy_texts(attributes: Attributes, pattern: re.Pattern[str]) -> Iterator[str]:
    for name in attributes:
        if pattern.fullmatch(name):
            value = attributes[name]
            if isinstance(value, str) and value:
                yield value


def _first_token_ns(span: SpanData) -> int | None:
    seconds = first(span.attributes, TTFT_SECONDS)
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        return span.start_ns + int(seconds * 1e9)
    for name, time_ns, _ in span.events:
        if name in CHUNK_EVENTS:
            return time_ns
    return None


def _span_error(span: SpanData) -> str | None:
    named = error_name(span.attributes.get("error.type"))
    if named is not None or not span.error:
        return named
    for name, _, attributes in span.events:
        if name == "exception":
            return error_name(attributes.get("exception.type")) or "_OTHER"
    return "_OTHER"


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
