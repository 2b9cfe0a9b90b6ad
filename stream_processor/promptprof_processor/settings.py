"""Stream-processor settings: a service's settings plus the worker's own sections (the topics only
the worker writes, ``influx``, ``windows``, ``worker``, ``alerts``).

Environment variables follow the usual scheme, lists as JSON, for example
``PROMPTPROF_WINDOWS__WIDTHS_S='[10, 60]'`` or
``PROMPTPROF_WINDOWS__LABEL_DIMENSIONS='["tenant"]'``.
Kafka and logging settings come from :class:`promptprof.Settings`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from promptprof import Settings, TopicSettings
from promptprof._event import MAX_LABEL_KEY_LEN, MAX_LABELS, tag_problem
from promptprof_processor.alerts.settings import AlertSettings
from promptprof_processor.health.settings import HealthSettings
from promptprof_processor.units import NS_PER_S as NS_PER_S

MAX_WIDTH_S = 86_400
DEFAULT_INFLUX_PORT = 18086
# Tag keys the window and alert measurements already use; a label dimension may not shadow them.
SERIES_TAG_KEYS = frozenset({"service", "prompt_id", "prompt_version", "model", "width"})
WINDOW_TAG_KEYS = SERIES_TAG_KEYS | {"error_type"}
ALERT_TAG_KEYS = SERIES_TAG_KEYS | {"rule", "severity", "state"}
RESERVED_TAG_KEYS = WINDOW_TAG_KEYS | ALERT_TAG_KEYS
# Keys InfluxDB gives a meaning of its own (a tag so named is dropped, refused or unreadable):
# ``time``, and on 2.x/3.x every name starting with "_" (_measurement, _field, _value, _start...).
INFLUX_RESERVED_KEY = "time"
INFLUX_RESERVED_PREFIX = "_"


class ProcessorTopicSettings(TopicSettings):
    """The calls topic and the topics the worker writes, with the partition count used when
    promptprof creates them."""

    dead_letter: str = "llm.calls.dlq"
    windows: str = "llm.windows"
    alerts: str = "llm.alerts"
    partitions: int = Field(default=4, ge=1, le=1024, description="between 1 and 1024")


class InfluxSettings(BaseModel):
    """Where window aggregates are written."""

    url: str = f"http://127.0.0.1:{DEFAULT_INFLUX_PORT}"
    api: Literal["v1", "v2"] = Field(default="v1", description="'v1' (/write) or 'v2' (/api/v2)")
    database: str = Field(default="promptprof", min_length=1, description="v1 database")
    token: SecretStr | None = None
    org: str = "promptprof"
    bucket: str = "promptprof"
    username: str | None = None
    password: SecretStr | None = None
    verify_ssl: bool = True
    timeout_s: float = Field(default=10.0, gt=0)


class WindowSettings(BaseModel):
    """Event-time tumbling windows, lateness and series cardinality."""

    widths_s: list[int] = Field(
        default=[10, 60],
        min_length=1,
        description="window widths in whole seconds, each 1..86400, e.g. [10, 60]",
    )
    rollup_widths_s: list[int] = Field(
        default=[3600],
        description="coarse window widths in whole seconds, each a multiple of a width in "
        "widths_s and up to 86400, merged exactly from the closed windows of the largest such "
        "width (one open accumulator per series, not one per fine window), e.g. [3600]",
    )
    allowed_lateness_s: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="seconds a window stays open after its end, 0..86400",
    )
    quality_lateness_s: float = Field(
        default=3600.0,
        ge=0,
        le=7 * 86_400,
        description="seconds after its call's window ends that a quality score still counts in "
        "that window, 0..604800 (no more than allowed_lateness_s: scores count only while "
        "the window is open); later ones go to the dead-letter topic",
    )
    max_held_quality_windows: int = Field(
        default=20_000,
        ge=1,
        le=10_000_000,
        description="closed windows per partition whose quality is held for late scores, "
        "1..10000000; beyond it the earliest ending is let go and its late scores go to the "
        "dead-letter topic",
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
    latency_thresholds_ms: list[float] = Field(
        default=[],
        max_length=16,
        description="latencies (ms, > 0) over which each window counts its calls exactly; the "
        "worker adds the latency-SLO thresholds of its alert rules",
    )

    @field_validator("latency_thresholds_ms")
    @classmethod
    def _valid_thresholds(cls, thresholds: list[float]) -> list[float]:
        if any(not 0 < t < math.inf for t in thresholds):
            raise ValueError("each latency threshold must be a positive, finite number of ms")
        return sorted(set(thresholds))

    def with_latency_thresholds(self, thresholds_ms: Iterable[float]) -> WindowSettings:
        """These settings, also counting the calls over ``thresholds_ms``."""
        given = [*self.latency_thresholds_ms, *thresholds_ms]
        return WindowSettings.model_validate({**self.model_dump(), "latency_thresholds_ms": given})

    @field_validator("widths_s")
    @classmethod
    def _valid_widths(cls, widths: list[int]) -> list[int]:
        if any(not 1 <= w <= MAX_WIDTH_S for w in widths):
            raise ValueError(f"each width must be within 1..{MAX_WIDTH_S} seconds")
        return sorted(set(widths))

    @model_validator(mode="after")
    def _valid_rollups(self) -> WindowSettings:
        widths = sorted(set(self.rollup_widths_s))
        for width in widths:
            if width in self.widths_s or not 1 <= width <= MAX_WIDTH_S:
                raise ValueError(f"rollup width {width} must be within 1..{MAX_WIDTH_S} seconds "
                                 "and not one of widths_s")
            if not any(width % fine == 0 for fine in self.widths_s):
                raise ValueError(f"rollup width {width} is no multiple of a width in widths_s "
                                 f"{self.widths_s}; set windows.rollup_widths_s (or [])")
        self.rollup_widths_s = widths
        return self

    def rollup_source(self, width_s: int) -> int:
        """The width whose closed windows a rollup width is merged from: the largest width of
        ``widths_s`` that divides it."""
        return max(w for w in self.widths_s if width_s % w == 0)

    @property
    def all_widths_s(self) -> list[int]:
        """Every width written, fine and rolled up, ascending."""
        return sorted({*self.widths_s, *self.rollup_widths_s})

    @field_validator("label_dimensions")
    @classmethod
    def _valid_dimensions(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("label dimensions must be distinct")
        for name in names:
            problem = _dimension_problem(name)
            if problem is not None:
                raise ValueError(
                    f"label dimension {name!r} {problem}; rename the label where the service "
                    f"sets it and in label_dimensions{_suggestion(name)}"
                )
        return names

    @property
    def quality_hold_ns(self) -> int:
        """How long past a window's close (in watermark time) its quality takes late scores."""
        return max(0, round((self.quality_lateness_s - self.allowed_lateness_s) * NS_PER_S))

    @property
    def max_future_ns(self) -> int:
        """The furthest an event may start ahead of the worker's clock, in nanoseconds."""
        return round(self.max_future_s * NS_PER_S)

    @property
    def allowed_lateness_ns(self) -> int:
        """Allowed lateness in nanoseconds."""
        return round(self.allowed_lateness_s * NS_PER_S)


def _dimension_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label dimension (an InfluxDB tag key), or None."""
    if name in RESERVED_TAG_KEYS:
        return "is a tag promptprof writes itself (window, error or alert tag)"
    if name == INFLUX_RESERVED_KEY or name.startswith(INFLUX_RESERVED_PREFIX):
        return "is a key InfluxDB reserves (time, and names starting with '_')"
    return tag_problem(name, MAX_LABEL_KEY_LEN)


def _suggestion(name: str) -> str:
    """A valid new name for a refused one, as ``" (e.g. 'label_x')"``, or nothing."""
    renamed = f"label_{name.lstrip(INFLUX_RESERVED_PREFIX)}"
    return "" if _dimension_problem(renamed) else f" (e.g. {renamed!r})"


RETENTION_POLICY_PREFIX = "promptprof_"
INFLUXQL_DURATION = r"^(INF|[1-9][0-9]*[mhdw])$"


class RetentionSettings(BaseModel):
    """How long InfluxDB keeps the windows of each width.

    Off by default: every width goes to the database's default retention policy. On: the
    windows of width ``w`` go to the retention policy ``promptprof_<w>s`` (InfluxDB 1.x; on 2.x
    a bucket per width, mapped to that name by DBRP), kept for ``durations[w]`` (InfluxQL
    durations: ``7d``, ``400d``, ``INF``), or ``default_duration`` for a width not listed.
    """

    enabled: bool = False
    durations: dict[int, str] = Field(
        default={10: "7d", 60: "30d", 3600: "400d"},
        description="window width in seconds -> how long its windows are kept, e.g. {10: 7d}",
    )
    default_duration: str = Field(default="30d", pattern=INFLUXQL_DURATION)

    @field_validator("durations")
    @classmethod
    def _valid_durations(cls, durations: dict[int, str]) -> dict[int, str]:
        for width, duration in durations.items():
            if not re.fullmatch(INFLUXQL_DURATION, duration):
                raise ValueError(f"the duration {duration!r} of width {width} is no InfluxQL "
                                 "duration such as 7d, 12h or INF")
        return durations

    def duration(self, width_s: int) -> str:
        """How long windows of ``width_s`` are kept."""
        return self.durations.get(width_s, self.default_duration)

    def policies(self, widths_s: Sequence[int]) -> dict[int, str]:
        """Width -> the retention policy its windows go to (empty when retention is off)."""
        if not self.enabled:
            return {}
        return {w: f"{RETENTION_POLICY_PREFIX}{w}s" for w in widths_s}


class WorkerSettings(BaseModel):
    """The Faust worker."""

    app_id: str = Field(default="promptprof-worker", min_length=1)
    checkpoint_interval_s: float = Field(default=2.0, gt=0, description="seconds, > 0")
    idle_timeout_s: float = Field(default=5.0, gt=0, description="seconds, > 0")
    fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=10_000,
        description="ms the consumer waits for new records per fetch, 1..10000 (Faust: 1500)",
    )
    sink_enabled: bool = True
    sink_max_poll_interval_s: float = Field(
        default=300.0, ge=1,
        description="seconds the sink's consumer may go without a poll before its group drops "
        "it, >= 1; while a write retries (InfluxDB down) it polls with its partitions paused",
    )
    web_port: int | None = Field(default=None, description="Faust web port; None disables it")
    data_dir: str = ".promptprof/worker"


class ProcessorSettings(Settings):
    """All settings of the stream processor."""

    topics: ProcessorTopicSettings = ProcessorTopicSettings()
    influx: InfluxSettings = InfluxSettings()
    windows: WindowSettings = WindowSettings()
    worker: WorkerSettings = WorkerSettings()
    alerts: AlertSettings = AlertSettings()
    retention: RetentionSettings = RetentionSettings()
    health: HealthSettings = HealthSettings()
