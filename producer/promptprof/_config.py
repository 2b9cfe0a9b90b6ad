"""Configuration: pydantic settings from ``PROMPTPROF_*`` environment variables and a YAML file.

Environment variables win over the YAML file, which wins over secret files, which win over the
defaults. Nested fields use a double underscore: ``PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS``. The
YAML file is named by ``PROMPTPROF_CONFIG`` (or passed to :func:`load_settings`). Secrets can be
files in the directory named by ``PROMPTPROF_SECRETS_DIR`` (e.g. a mounted Docker or Kubernetes
secret), one value per file, named like the variable (any case):
``promptprof_kafka__sasl_password``, ``promptprof_influx__token``.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from promptprof._event import MAX_SERVICE_LEN, TAG_SAFE

ENV_PREFIX = "PROMPTPROF_"
CONFIG_FILE_ENV = "PROMPTPROF_CONFIG"
SECRETS_DIR_ENV = "PROMPTPROF_SECRETS_DIR"
DEFAULT_KAFKA_PORT = 19092

_yaml_path: ContextVar[Path | None] = ContextVar("promptprof_yaml_path", default=None)


class ConfigError(ValueError):
    """An invalid setting: the message names each bad field, its variable and the fix."""


class KafkaSettings(BaseModel):
    """How to reach Kafka. Security options are passed through to aiokafka."""

    bootstrap_servers: str = Field(
        default=f"127.0.0.1:{DEFAULT_KAFKA_PORT}",
        min_length=1,
        description="comma-separated host:port list, e.g. 127.0.0.1:19092",
    )
    client_id: str = Field(default="promptprof", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    request_timeout_ms: int = Field(default=10_000, gt=0, description="a positive number of ms")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            password = self.sasl_password
            options["sasl_plain_password"] = password.get_secret_value() if password else None
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return options


class TopicSettings(BaseModel):
    """The topics a service writes: its call events and its producer stats."""

    calls: str = "llm.calls"
    producer_stats: str = "llm.producer_stats"


class ProducerSettings(BaseModel):
    """The embedded producer: buffering, batching, sampling and privacy."""

    enabled: bool = True
    service_name: str = Field(
        default="unknown-service", min_length=1, max_length=MAX_SERVICE_LEN, pattern=TAG_SAFE,
        description="1..128 characters, no newline, no backslash before a "
        "backslash, comma, equals sign, space or the end (an InfluxDB tag must read back exactly)",
    )
    environment: str = Field(default="dev", max_length=64)
    buffer_size: int = Field(
        default=100_000, ge=100, le=10_000_000, description="events held in memory, 100..10M"
    )
    max_bytes_held: int = Field(
        default=64 * 1024 * 1024, ge=1024 * 1024,
        description="bytes held in memory (buffer, cycles pending and in flight), >= 1 MiB",
    )
    batch_max_events: int = Field(
        default=500, ge=1, le=10_000, description="events per Kafka record, 1..10000"
    )
    linger_ms: int = Field(default=50, ge=1, le=60_000, description="ms between sends, 1..60000")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "lz4"
    sample_rate: float = Field(default=1.0, gt=0, le=1, description="a fraction in (0, 1]")
    capture_text: bool = Field(
        default=False, description="send prompt and response text (after the redaction hook)"
    )
    retry_backoff_initial_ms: int = Field(default=100, gt=0)
    retry_backoff_max_ms: int = Field(default=10_000, gt=0)
    close_timeout_s: float = Field(default=5.0, ge=0, description="seconds to flush at exit")
    metrics_log_interval_s: float = Field(
        default=60.0, ge=0, description="seconds between self-metric log lines; 0 disables"
    )
    stats_interval_s: float = Field(
        default=10.0, ge=0,
        description="seconds between stats events to the producer-stats topic; 0 disables",
    )
    spool_dir: Path | None = Field(
        default=None, description="a directory for the disk spool; unset disables the spool"
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=64 * 1024, description="spool size cap in bytes, >= 64 KiB"
    )
    spool_after_s: float = Field(
        default=5.0, ge=0, description="seconds a cycle may fail or wait before it is spooled"
    )

    @field_validator("compression")
    @classmethod
    def _codec_installed(cls, value: str) -> str:
        if value != "none":
            from aiokafka import codec

            if not getattr(codec, f"has_{value}")():
                raise ValueError(
                    f"compression {value!r} needs its codec library: pip install cramjam, "
                    "or set compression to 'gzip' or 'none'"
                )
        return value


class Settings(BaseSettings):
    """A service's settings: logging, Kafka, the calls topic and the embedded producer.

    The worker's settings (:class:`promptprof_processor.settings.ProcessorSettings`) extend it;
    a section only they know (``influx``, ``windows``...) is ignored here."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore",
        hide_input_in_errors=True,  # a ValidationError must not quote a secret
    )

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    producer: ProducerSettings = ProducerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path.get() or os.environ.get(CONFIG_FILE_ENV)
        if path:
            _read_yaml(Path(path))  # a clear error for an unreadable file or a non-mapping
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        secrets_dir = os.environ.get(SECRETS_DIR_ENV)
        if secrets_dir:  # one file per value, named like its variable (any case)
            if not Path(secrets_dir).is_dir():
                raise ConfigError(f"{SECRETS_DIR_ENV}: {secrets_dir} is not a directory")
            file_secret_settings = NestedSecretsSettingsSource(
                file_secret_settings, secrets_dir=secrets_dir, secrets_nested_delimiter="__"
            )
        sources.append(file_secret_settings)
        return tuple(sources)


S = TypeVar("S", bound=BaseSettings)


def load_settings(
    path: str | Path | None = None, cls: type[S] = Settings, **overrides: Any  # type: ignore[assignment]
) -> S:
    """Load settings from env and YAML, raising :class:`ConfigError` that names each bad field."""
    token = _yaml_path.set(Path(path) if path else None)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, cls)) from None
    finally:
        _yaml_path.reset(token)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        # not str(exc): its snippet quotes the offending line, which may hold a secret
        raise ConfigError(f"cannot read config file {path}: {_yaml_problem(exc)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    odd = sorted({type(key).__name__ for key in loaded if not isinstance(key, str)})
    if odd:
        raise ConfigError(f"config file {path}: top-level keys must be names, not {odd}")
    return loaded


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error's problem and position, without the quoted text of the file."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return "invalid YAML"
    parts = []
    for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(f"{text}{where}")
    return "invalid YAML: " + (": ".join(parts) or "syntax error")


def _describe(exc: ValidationError, cls: type[BaseSettings]) -> str:
    lines = ["invalid promptprof configuration:"]
    for error in exc.errors():
        path = [str(p) for p in error["loc"]]
        env = ENV_PREFIX + "__".join(p.upper() for p in path)
        hint = _field_hint(cls, path)
        fix = f"; expected {hint}" if hint else ""
        lines.append(f"  {'.'.join(path)} (env {env}): {error['msg']}{fix}")
    return "\n".join(lines)


def _field_hint(cls: type[BaseModel], path: list[str]) -> str | None:
    model: Any = cls
    info = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            break
        info = fields[part]
        model = info.annotation
    return info.description if info is not None else None
