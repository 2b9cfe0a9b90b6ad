"""Settings of ``promptprof collect``: ``PROMPTPROF_COLLECT__*`` and ``PROMPTPROF_GENAI__*``."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from promptprof._config import Settings
from promptprof.integrations._genai import GenAIMapping

DEFAULT_PORT = 14318  # beside OTLP/HTTP's usual 4318, which a real collector may hold


class CollectSettings(BaseModel):
    """Where the OTLP receiver listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="0: any free port")
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535, description="OTLP/gRPC port (e.g. 4317); unset: off"
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024,
        description="largest request body, compressed or not (larger: 413), >= 1 KiB",
    )
    bearer_token: SecretStr | None = Field(
        default=None, description="when set, requests need 'Authorization: Bearer <token>'"
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="seconds a sender is told to wait while the buffer is full"
    )


class CollectorSettings(Settings):
    """The producer's settings (Kafka, batching, spool), the receiver's, and the prompt mapping."""

    collect: CollectSettings = CollectSettings()
    genai: GenAIMapping = GenAIMapping()
