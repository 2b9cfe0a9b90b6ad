"""Settings of the pipeline's health: the probe server, the self-metric points, the alerts.

The ``health`` section of the processor's settings, e.g. from the environment
``PROMPTPROF_HEALTH__PORT=9464`` or ``PROMPTPROF_HEALTH__ALERTS__SINK_BEHIND_S=120``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PipelineAlertSettings(BaseModel):
    """When the pipeline itself alerts (through the receivers of the ``alerts`` section)."""

    enabled: bool = True
    producer_drops: bool = Field(
        default=True, description="alert when a producer dropped events within drops_window_s")
    drops_window_s: float = Field(default=300.0, gt=0, description="seconds, > 0")
    producer_stale_s: float = Field(
        default=60.0, gt=0,
        description="seconds without a report before a producer is stale (not after a final "
        "report: it closed), > 0")
    producers_lookback_s: float = Field(
        default=3600.0, gt=0,
        description="producers silent longer than this are forgotten (no longer stale), > 0")
    sink_behind_s: float = Field(
        default=120.0, gt=0,
        description="seconds the oldest window not yet in InfluxDB may wait, > 0")
    dead_letters_per_s: float = Field(
        default=1.0, ge=0, description="dead letters per second (all stages) above which, >= 0")
    partition_stalled_s: float = Field(
        default=60.0, gt=0,
        description="seconds a partition with records to read may keep its position, > 0")


class HealthSettings(BaseModel):
    """The worker's health endpoint, self-metric points and pipeline alerts."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="address of /metrics, /healthz, /readyz")
    port: int | None = Field(
        default=9464, ge=0, le=65535,
        description="port of /metrics, /healthz and /readyz (0: any free one); None disables")
    interval_s: float = Field(
        default=5.0, gt=0, le=3600,
        description="seconds between self-metric points to InfluxDB and alert checks")
    worker_name: str | None = Field(
        default=None, max_length=128,
        description="the worker tag; default: host name and process id")
    max_pending_lines: int = Field(
        default=100_000, ge=100,
        description="self-metric lines held while InfluxDB is down; the oldest go first")
    alerts: PipelineAlertSettings = PipelineAlertSettings()
