"""The call event: the contract between the producer and the stream processor.

One event describes one LLM call. Field names follow the OpenTelemetry GenAI semantic
conventions where one exists (``gen_ai.*``, ``error.type``, ``service.name``); the rest live
under ``promptprof.*``. Events travel in batch envelopes (see :mod:`promptprof._envelope`).

The producer builds plain dicts with these keys on its background thread (pydantic on the hot
path would cost microseconds per call); the processor validates every event against these
models (through plain-dict validators built from their fields, which is faster).

Values that become InfluxDB tags (service, prompt id, version, request model, error type, label
values) must be :data:`TAG_SAFE`: no newline, and no backslash before a backslash, a comma, an
equals sign, a space or the end of the value. InfluxDB 1.x cannot read back a tag holding a
newline or ending in a backslash; the rest of the rule keeps every written backslash an ordinary
character for parsers that read ``\\\\`` as one backslash (InfluxDB 3). Every other character,
emoji and control characters included, reads back exactly from InfluxDB 1.x.
The producer refuses (and counts) events with other values; the processor dead-letters them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
MAX_LABELS = 16
MAX_LABEL_KEY_LEN = 64
MAX_LABEL_VALUE_LEN = 256
MAX_SERVICE_LEN = 128
MAX_PROMPT_ID_LEN = 256
MAX_VERSION_LEN = 128
MAX_MODEL_LEN = 128
MAX_ERROR_TYPE_LEN = 128

# No newline; a backslash only before a character that no line-protocol parser reads as escaped.
TAG_SAFE = r"^(?:[^\\\n]|\\[^\\,= \n])*$"
_TAG_SAFE = re.compile(TAG_SAFE)

Status = Literal["ok", "error"]
NonNegInt = Annotated[int, Field(ge=0)]
LabelKey = Annotated[str, StringConstraints(max_length=MAX_LABEL_KEY_LEN)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_LEN, pattern=TAG_SAFE)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]


class CallEvent(BaseModel):
    """One measured LLM call, as published to Kafka (schema version 1)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, strict=True)

    schema_version: Literal[1] = Field(description="Version of this event schema.")
    event_id: str = Field(min_length=1, max_length=64, description="Unique id of the call.")
    start_time_unix_nano: int = Field(ge=0, description="Call start, ns since the Unix epoch.")
    service: str = Field(
        alias="service.name", min_length=1, max_length=MAX_SERVICE_LEN, pattern=TAG_SAFE
    )
    environment: str = Field(alias="deployment.environment.name", max_length=64, default="")
    prompt_id: str = Field(
        alias="promptprof.prompt.id", min_length=1, max_length=MAX_PROMPT_ID_LEN, pattern=TAG_SAFE
    )
    prompt_version: str = Field(
        alias="promptprof.prompt.version",
        min_length=1,
        max_length=MAX_VERSION_LEN,
        pattern=TAG_SAFE,
        description="Explicit version, or a hash of the template.",
    )
    provider: str = Field(alias="gen_ai.provider.name", max_length=64, default="unknown")
    operation: str = Field(alias="gen_ai.operation.name", max_length=64, default="chat")
    request_model: str = Field(
        alias="gen_ai.request.model", max_length=MAX_MODEL_LEN, pattern=TAG_SAFE,
        default="unknown",
    )
    response_model: str | None = Field(alias="gen_ai.response.model", max_length=128, default=None)
    latency_ms: float = Field(
        alias="promptprof.latency_ms", ge=0, allow_inf_nan=False, description="Wall time in ms."
    )
    ttft_ms: float | None = Field(
        alias="gen_ai.server.time_to_first_token",
        ge=0,
        allow_inf_nan=False,
        default=None,
        description="Time to first token in ms (streaming calls only).",
    )
    input_tokens: NonNegInt | None = Field(alias="gen_ai.usage.input_tokens", default=None)
    output_tokens: NonNegInt | None = Field(alias="gen_ai.usage.output_tokens", default=None)
    cached_tokens: NonNegInt | None = Field(
        alias="gen_ai.usage.cache_read.input_tokens", default=None
    )
    tokens_estimated: bool = Field(
        alias="promptprof.tokens.estimated",
        default=False,
        description="True when tokens were counted locally, not returned by the API.",
    )
    cost_usd: float | None = Field(
        alias="promptprof.cost.usd",
        ge=0,
        allow_inf_nan=False,
        default=None,
        description="Cost from the genai-prices table; null when the model is unknown.",
    )
    status: Status = Field(alias="promptprof.status", default="ok")
    error_type: str | None = Field(
        alias="error.type", max_length=MAX_ERROR_TYPE_LEN, pattern=TAG_SAFE, default=None
    )
    quality_score: float | None = Field(
        alias="promptprof.quality.score", ge=0, le=1, allow_inf_nan=False, default=None
    )
    quality_metric: str | None = Field(
        alias="promptprof.quality.metric", max_length=64, default=None
    )
    labels: Labels = Field(alias="promptprof.labels", default_factory=dict)
    sample_rate: float = Field(
        alias="promptprof.sample_rate",
        gt=0,
        le=1,
        default=1.0,
        description="Fraction of calls recorded; weight each event by 1/sample_rate.",
    )
    prompt_text: str | None = Field(alias="gen_ai.input.messages", default=None)
    response_text: str | None = Field(alias="gen_ai.output.messages", default=None)

    @property
    def weight(self) -> float:
        """How many real calls this sampled event stands for."""
        return 1.0 / self.sample_rate


class QualityEvent(BaseModel):
    """A quality score attached to an earlier call after it was sent (schema version 1)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, strict=True)

    kind: Literal["quality"]
    schema_version: Literal[1]
    event_id: str = Field(min_length=1, max_length=64, description="The scored call's id.")
    start_time_unix_nano: int = Field(ge=0, description="The scored call's start time.")
    service: str = Field(
        alias="service.name", min_length=1, max_length=MAX_SERVICE_LEN, pattern=TAG_SAFE
    )
    prompt_id: str = Field(
        alias="promptprof.prompt.id", min_length=1, max_length=MAX_PROMPT_ID_LEN, pattern=TAG_SAFE
    )
    prompt_version: str = Field(
        alias="promptprof.prompt.version", min_length=1, max_length=MAX_VERSION_LEN,
        pattern=TAG_SAFE,
    )
    request_model: str = Field(
        alias="gen_ai.request.model", max_length=MAX_MODEL_LEN, pattern=TAG_SAFE,
        default="unknown",
    )
    quality_score: float = Field(
        alias="promptprof.quality.score", ge=0, le=1, allow_inf_nan=False
    )
    quality_metric: str = Field(alias="promptprof.quality.metric", max_length=64)
    labels: Labels = Field(alias="promptprof.labels", default_factory=dict)
    sample_rate: float = Field(alias="promptprof.sample_rate", gt=0, le=1, default=1.0)


def tag_problem(value: object, max_length: int, *, required: bool = True) -> str | None:
    """Why ``value`` cannot be a tag value that reads back exactly from InfluxDB, or None.

    ``required``: an empty value is refused (an empty optional one writes no tag).
    """
    if not isinstance(value, str):
        return "is not a string"
    if not value:
        return "is empty" if required else None
    if len(value) > max_length:
        return f"is longer than {max_length} characters"
    return line_protocol_problem(value)


def line_protocol_problem(value: str) -> str | None:
    """Why ``value`` cannot be written as a line-protocol tag key or value, or None."""
    if ("\\" in value or "\n" in value) and not _TAG_SAFE.fullmatch(value):
        return (
            "holds a newline or a backslash before a backslash, comma, equals sign, space or "
            "the end, which InfluxDB line protocol cannot carry"
        )
    return unicode_problem(value)


def unicode_problem(value: str) -> str | None:
    """Why ``value`` cannot be encoded as UTF-8 (a lone surrogate), or None."""
    if value.isascii():
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def series_key(event: dict[str, object]) -> bytes:
    """The Kafka key of an event: its series, so a series stays on one partition."""
    parts = (
        event.get("service.name", ""),
        event.get("promptprof.prompt.id", ""),
        event.get("promptprof.prompt.version", ""),
        event.get("gen_ai.request.model", ""),
    )
    return "\x1f".join(str(p) for p in parts).encode()
