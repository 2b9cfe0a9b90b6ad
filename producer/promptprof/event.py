"""The call event: the contract between the producer and the stream processor.

One event describes one LLM call. Field names follow the OpenTelemetry GenAI semantic
conventions where one exists (``gen_ai.*``, ``error.type``, ``service.name``); the rest live
under ``promptprof.*``. Events travel in batch envelopes (see :mod:`promptprof.envelope`).

The producer builds plain dicts with these keys on its background thread (pydantic on the hot
path would cost microseconds per call); the processor validates every event against these
models (through plain-dict validators built from their fields, which is faster).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
MAX_LABELS = 16
MAX_LABEL_KEY_LEN = 64
MAX_LABEL_VALUE_LEN = 256

Status = Literal["ok", "error"]
NonNegInt = Annotated[int, Field(ge=0)]
LabelKey = Annotated[str, StringConstraints(max_length=MAX_LABEL_KEY_LEN)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_LEN)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]


class CallEvent(BaseModel):
    """One measured LLM call, as published to Kafka (schema version 1)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, strict=True)

    schema_version: Literal[1] = Field(description="Version of this event schema.")
    event_id: str = Field(min_length=1, max_length=64, description="Unique id of the call.")
    start_time_unix_nano: int = Field(ge=0, description="Call start, ns since the Unix epoch.")
    service: str = Field(alias="service.name", min_length=1, max_length=128)
    environment: str = Field(alias="deployment.environment.name", max_length=64, default="")
    prompt_id: str = Field(alias="promptprof.prompt.id", min_length=1, max_length=256)
    prompt_version: str = Field(
        alias="promptprof.prompt.version",
        min_length=1,
        max_length=128,
        description="Explicit version, or a hash of the template.",
    )
    provider: str = Field(alias="gen_ai.provider.name", max_length=64, default="unknown")
    operation: str = Field(alias="gen_ai.operation.name", max_length=64, default="chat")
    request_model: str = Field(alias="gen_ai.request.model", max_length=128, default="unknown")
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
    error_type: str | None = Field(alias="error.type", max_length=128, default=None)
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
    service: str = Field(alias="service.name", min_length=1, max_length=128)
    prompt_id: str = Field(alias="promptprof.prompt.id", min_length=1, max_length=256)
    prompt_version: str = Field(alias="promptprof.prompt.version", min_length=1, max_length=128)
    request_model: str = Field(alias="gen_ai.request.model", max_length=128, default="unknown")
    quality_score: float = Field(
        alias="promptprof.quality.score", ge=0, le=1, allow_inf_nan=False
    )
    quality_metric: str = Field(alias="promptprof.quality.metric", max_length=64)
    labels: Labels = Field(alias="promptprof.labels", default_factory=dict)
    sample_rate: float = Field(alias="promptprof.sample_rate", gt=0, le=1, default=1.0)


def series_key(event: dict[str, object]) -> bytes:
    """The Kafka key of an event: its series, so a series stays on one partition."""
    parts = (
        event.get("service.name", ""),
        event.get("promptprof.prompt.id", ""),
        event.get("promptprof.prompt.version", ""),
        event.get("gen_ai.request.model", ""),
    )
    return "\x1f".join(str(p) for p in parts).encode()
