"""Stream-processor settings: promptprof's settings plus a ``windows`` section.

Environment variables follow the usual scheme, lists as JSON, for example
``PROMPTPROF_WINDOWS__WIDTHS_S='[10, 60]'`` or
``PROMPTPROF_WINDOWS__LABEL_DIMENSIONS='["tenant"]'``.
Kafka, InfluxDB and logging settings come from :class:`promptprof.config.Settings`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from promptprof.config import Settings
from promptprof.event import MAX_LABEL_KEY_LEN, MAX_LABELS
from promptprof_processor.alerts.settings import AlertSettings
from promptprof_processor.units import NS_PER_S as NS_PER_S

MAX_WIDTH_S = 86_400
# Tag keys the window measurements already use; a label dimension may not shadow them.
RESERVED_TAG_KEYS = frozenset(
    {"service", "prompt_id", "prompt_version", "model", "width", "error_type"}
)


class WindowSettings(BaseModel):
    """Event-time tumbling windows, lateness and series cardinality."""

    widths_s: list[int] = Field(
        default=[10, 60],
        min_length=1,
        description="window widths in whole seconds, each 1..86400, e.g. [10, 60]",
    )
    allowed_lateness_s: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="seconds a window stays open after its end, 0..86400",
    )
    label_dimensions: list[str] = Field(
        default=[],
        max_length=MAX_LABELS,
        description='names of promptprof.labels keys that become series tags, e.g. ["tenant"]',
    )
    max_series_per_prompt: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="distinct label combinations per prompt before the overflow series, 1..100000",
    )
    max_future_s: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="seconds an event may start ahead of the worker's clock, 0..86400; "
        "later ones go to the dead-letter topic",
    )

    @field_validator("widths_s")
    @classmethod
    def _valid_widths(cls, widths: list[int]) -> list[int]:
        if any(not 1 <= w <= MAX_WIDTH_S for w in widths):
            raise ValueError(f"each width must be within 1..{MAX_WIDTH_S} seconds")
        return sorted(set(widths))

    @field_validator("label_dimensions")
    @classmethod
    def _valid_dimensions(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("label dimensions must be distinct")
        for name in names:
            if not 1 <= len(name) <= MAX_LABEL_KEY_LEN:
                raise ValueError(f"label dimension names must be 1..{MAX_LABEL_KEY_LEN} characters")
            if name in RESERVED_TAG_KEYS:
                raise ValueError(f"label dimension {name!r} would shadow a series tag")
        return names

    @property
    def max_future_ns(self) -> int:
        """The furthest an event may start ahead of the worker's clock, in nanoseconds."""
        return round(self.max_future_s * NS_PER_S)

    @property
    def allowed_lateness_ns(self) -> int:
        """Allowed lateness in nanoseconds."""
        return round(self.allowed_lateness_s * NS_PER_S)


class WorkerSettings(BaseModel):
    """The Faust worker."""

    app_id: str = Field(default="promptprof-worker", min_length=1)
    checkpoint_interval_s: float = Field(default=2.0, gt=0, description="seconds, > 0")
    idle_timeout_s: float = Field(default=5.0, gt=0, description="seconds, > 0")
    fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=10_000,
        description="ms the consumer waits for new records per fetch, 1..10000 (Faust: 1500)",
    )
    stall_check_s: float = Field(
        default=5.0, gt=0,
        description="seconds; a partition behind its log for two checks in a row is read "
        "by the worker itself, > 0",
    )
    sink_enabled: bool = True
    web_port: int | None = Field(default=None, description="Faust web port; None disables it")
    data_dir: str = ".promptprof/worker"


class ProcessorSettings(Settings):
    """All settings of the stream processor."""

    windows: WindowSettings = WindowSettings()
    worker: WorkerSettings = WorkerSettings()
    alerts: AlertSettings = AlertSettings()
