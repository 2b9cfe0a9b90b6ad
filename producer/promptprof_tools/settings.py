"""The tools' settings: the worker's settings plus the local stack's ``stack`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from promptprof._config import DEFAULT_KAFKA_PORT
from promptprof_processor.settings import DEFAULT_INFLUX_PORT, ProcessorSettings


class StackSettings(BaseModel):
    """The local development stack: Tansu and InfluxDB on loopback."""

    kafka_port: int = Field(default=DEFAULT_KAFKA_PORT, ge=1, le=65535)
    influx_port: int = Field(default=DEFAULT_INFLUX_PORT, ge=1, le=65535)
    influx_rpc_port: int = Field(default=18088, ge=1, le=65535)
    # memory by default: bench/broker.py measured the worker at under 1 % of its memory-mode
    # throughput on s3 (the bar for the default was 80 %); see the README
    kafka_storage: Literal["memory", "s3"] = Field(
        default="memory",
        description="'memory': lost whenever Tansu stops; 's3': Tansu on localbucket under "
        "state_dir, kept across restarts",
    )
    s3_port: int = Field(default=19000, ge=1, le=65535, description="localbucket's port (s3)")
    state_dir: Path = Path(".promptprof/stack")

    @property
    def durable(self) -> bool:
        """Whether the local broker keeps its data across restarts."""
        return self.kafka_storage == "s3"


class ToolSettings(ProcessorSettings):
    """What the ``promptprof`` command reads: every section, ``stack`` included."""

    stack: StackSettings = StackSettings()
