"""The tools' settings: the worker's settings plus the local stack's ``stack`` section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from promptprof._config import DEFAULT_KAFKA_PORT
from promptprof_processor.settings import DEFAULT_INFLUX_PORT, ProcessorSettings


class StackSettings(BaseModel):
    """The local development stack: Tansu and InfluxDB on loopback."""

    kafka_port: int = Field(default=DEFAULT_KAFKA_PORT, ge=1, le=65535)
    influx_port: int = Field(default=DEFAULT_INFLUX_PORT, ge=1, le=65535)
    influx_rpc_port: int = Field(default=18088, ge=1, le=65535)
    state_dir: Path = Path(".promptprof/stack")


class ToolSettings(ProcessorSettings):
    """What the ``promptprof`` command reads: every section, ``stack`` included."""

    stack: StackSettings = StackSettings()
