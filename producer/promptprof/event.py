"""The call event: the contract between the producer and the stream processor.

One event describes one LLM call. Field names follow the OpenTelemetry GenAI semantic
conventions where one exists (``gen_ai.*``, ``error.type``, ``service.name``); the rest live
under ``promptprof.*``. Events travel in batch envelopes (see :mod:`promptprof.envelope`).

The producer builds plain dicts with these keys on its background thread (pydantic on the hot
path would cost microseconds per call); the processor validates every event with
:class:`CallEvent`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
MAX_LABELS = 16
MAX_LABEL_KEY_LEN = 64
MAX_LABEL_VALUE_LEN = 256

Status = Literal["ok", "error"]
NonNegInt = Annotated[int, Field(ge=0)]


class CallEvent(BaseModel):
    """One measured LLM call, as published to Kafka (schema version 1)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

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
    latency_ms: float = Field(alias="promptprof.latency_ms", ge=0, description="Wall time.")
    ttft_ms: float | None = Field(
        alias="gen_ai.server.time_to_first_token",
        ge=0,
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
        default=None,
        description="Cost from the genai-prices table; null when the model is unknown.",
    )
    status: Status = Field(alias="promptprof.status", default="ok")
    error_type: str | None = Field(alias="error.type", max_length=128, default=None)
    quality_score: float | None = Field(alias="promptprof.quality.score", default=None)
    quality_metric: str | None = Field(alias="promptprof.quality.metric", default=None)
    labels: dict[str, str] = Field(alias="promptprof.labels", default_factory=dict)
    sample_rate: float = Field(
        alias="promptprof.sample_rate",
        gt=0,
        le=1,
        default=1.0,
        description="Fraction of calls recorded; weight each event by 1/sample_rate.",
    )
    prompt_text: str | None = Field(alias="gen_ai.input.messages", default=None)
    response_text: str | None = Field(alias="gen_ai.output.messages", default=None)

    @field_validator("latency_ms", "ttft_ms", "cost_usd", "quality_score")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("quality_score")
    @classmethod
    def _unit_interval(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("quality score must be within [0, 1]")
        return value

    @field_validator("labels")
    @classmethod
    def _bounded_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if len(labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key, value in labels.items():
            if len(key) > MAX_LABEL_KEY_LEN or len(value) > MAX_LABEL_VALUE_LEN:
                raise ValueError("label key or value too long")
        return labels

    @property
    def weight(self) -> float:
        """How many real calls this sampled event stands for."""
        return 1.0 / self.sample_rate


class QualityEvent(BaseModel):
    """A quality score attached to an earlier call after it was sent (schema version 1)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    kind: Literal["quality"]
    schema_version: Literal[1]
    event_id: str = Field(min_length=1, max_length=64, description="The scored call's id.")
    start_time_unix_nano: int = Field(ge=0, description="The scored call's start time.")
    service: str = Field(alias="service.name", min_length=1, max_length=128)
    prompt_id: str = Field(alias="promptprof.prompt.id", min_length=1, max_length=256)
    prompt_version: str = Field(alias="promptprof.prompt.version", min_length=1, max_length=128)
    request_model: str = Field(alias="gen_ai.request.model", max_length=128, default="unknown")
    quality_score: float = Field(alias="promptprof.quality.score", ge=0, le=1)
    quality_metric: str = Field(alias="promptprof.quality.metric", max_length=64)
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
