"""Alerts on the pipeline itself, judged every health interval.

Rules (thresholds in :class:`~promptprof_processor.health.settings.PipelineAlertSettings`):

``pipeline.producer_drops``
    A producer's ``dropped`` counter rose within ``drops_window_s``, or a producer that started
    within it dropped events (critical: calls are lost).
``pipeline.producer_stale``
    A producer's last report is older than ``producer_stale_s`` and was not its final one.
``pipeline.sink_behind``
    The oldest window the sink has not yet written waited more than ``sink_behind_s``.
``pipeline.dead_letters``
    The worker's dead letters (every stage) grew faster than ``dead_letters_per_s`` between two
    samples.
``pipeline.partition_stalled``
    A partition with records to read kept its position for ``partition_stalled_s``.

Each holds or not at every check, measured directly (no estimate, so no error rate): an alert
fires when its condition starts holding and resolves when it stops, one event each, as an
:class:`~promptprof_processor.alerts.events.Alert` of kind ``pipeline`` whose series is
``service``/``pipeline``/``*``/``*`` with labels naming the producer or worker and partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptprof_processor.alerts.events import Alert, AlertWindow, alert_id, fingerprint
from promptprof_processor.alerts.rules import Severity
from promptprof_processor.health.figures import WorkerFigures
from promptprof_processor.health.settings import PipelineAlertSettings
from promptprof_processor.health.status import ProducerStatus
from promptprof_processor.windows.figures import SeriesTags

PIPELINE = "pipeline"
WORKER_SERVICE = "promptprof"
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule that holds now for one subject."""

    rule: str
    severity: Severity
    series: SeriesTags
    observed: float
    threshold: float
    message: str

    @property
    def fingerprint(self) -> str:
        """The incident's identity: the subject and the rule."""
        return fingerprint(self.series, self.rule)


def _series(service: str, **labels: str) -> SeriesTags:
    return SeriesTags(service=service, prompt_id=PIPELINE, prompt_version="*", model="*",
                      labels={k: v for k, v in labels.items() if v})


def producer_conditions(
    producers: list[ProducerStatus], settings: PipelineAlertSettings
) -> list[Condition]:
    """The producer rules that hold."""
    out = []
    for p in producers:
        series = _series(p.service, environment=p.environment, host=p.host, pid=p.pid)
        if settings.producer_drops and p.drops_in_window > 0:
            out.append(Condition(
                "pipeline.producer_drops", "critical", series, p.drops_in_window, 0.0,
                f"producer {p.key} dropped {p.drops_in_window:g} events in the last "
                f"{settings.drops_window_s:g} s"))
        if p.stale:
            out.append(Condition(
                "pipeline.producer_stale", "warning", series, p.age_s,
                settings.producer_stale_s,
                f"producer {p.key} has not reported for {p.age_s:.0f} s"))
    return out


class WorkerJudge:
    """The worker rules, with what they remember between samples."""

    def __init__(self, settings: PipelineAlertSettings) -> None:
        """A judge with the thresholds of ``settings``."""
        self.settings = settings
        self._dead_letters: tuple[int, int] | None = None  # (count, time_ns)
        self._positions: dict[int, tuple[int, int]] = {}  # partition -> (offset, since_ns)

    def conditions(self, figures: WorkerFigures) -> list[Condition]:
        """The worker rules that hold in this sample."""
        return [*self._sink(figures), *self._dead_letter_rate(figures), *self._stalled(figures)]

    def _sink(self, figures: WorkerFigures) -> list[Condition]:
        limit = self.settings.sink_behind_s
        if figures.sink_oldest_unwritten_s <= limit:
            return []
        return [Condition(
            "pipeline.sink_behind", "critical", _series(WORKER_SERVICE, worker=figures.worker),
            figures.sink_oldest_unwritten_s, limit,
            f"worker {figures.worker}: the oldest window not in InfluxDB waited "
            f"{figures.sink_oldest_unwritten_s:.0f} s ({figures.sink_backlog} windows behind)")]

    def _dead_letter_rate(self, figures: WorkerFigures) -> list[Condition]:
        count, now = figures.dead_letters, figures.time_ns
        previous, self._dead_letters = self._dead_letters, (count, now)
        if previous is None or now <= previous[1]:
            return []
        rate = max(0, count - previous[0]) * NS / (now - previous[1])
        limit = self.settings.dead_letters_per_s
        if rate <= limit:
            return []
        return [Condition(
            "pipeline.dead_letters", "warning", _series(WORKER_SERVICE, worker=figures.worker),
            rate, limit, f"worker {figures.worker}: {rate:.2f} dead letters/s (limit {limit:g})")]

    def _stalled(self, figures: WorkerFigures) -> list[Condition]:
        out, now = [], figures.time_ns
        limit = self.settings.partition_stalled_s
        positions = {}
        for p in figures.partitions:
            offset, since = self._positions.get(p.partition, (p.next_offset, now))
            if offset != p.next_offset or p.lag_records == 0:
                since = now
            positions[p.partition] = (p.next_offset, since)
            stalled_s = (now - since) / NS
            if stalled_s > limit:
                out.append(Condition(
                    "pipeline.partition_stalled", "critical",
                    _series(WORKER_SERVICE, worker=figures.worker, partition=str(p.partition)),
                    stalled_s, limit,
                    f"worker {figures.worker}: partition {p.partition} has {p.lag_records} "
                    f"records to read and has not moved for {stalled_s:.0f} s"))
        self._positions = positions
        return out


class Incidents:
    """Turns the conditions of each check into firing and resolved alerts."""

    def __init__(self, interval_s: float) -> None:
        """Incidents judged every ``interval_s``."""
        self.width_s = max(1, round(interval_s))
        self._open: dict[str, tuple[Condition, int]] = {}  # fingerprint -> (condition, started)

    def update(self, holding: list[Condition], rules: set[str], now_ns: int) -> list[Alert]:
        """Alerts for the conditions that started and for those of ``rules`` that stopped."""
        alerts = []
        now_holding = {c.fingerprint: c for c in holding}
        for key, condition in now_holding.items():
            if key not in self._open:
                self._open[key] = (condition, now_ns)
                alerts.append(self._alert(condition, "firing", now_ns, now_ns))
        for key, (condition, started) in list(self._open.items()):
            if key not in now_holding and condition.rule in rules:
                del self._open[key]
                alerts.append(self._alert(condition, "resolved", started, now_ns))
        return alerts

    def _alert(self, condition: Condition, state: str, started_ns: int, now_ns: int) -> Alert:
        fp = condition.fingerprint
        resolved = state == "resolved"
        return Alert(
            alert_id=alert_id(fp, "resolved" if resolved else "firing", started_ns, now_ns),
            fingerprint=fp, state="resolved" if resolved else "firing", kind="pipeline",
            rule=condition.rule, metric=condition.rule.removeprefix("pipeline."),
            severity=condition.severity, series=condition.series,
            window=AlertWindow(start_ns=now_ns - self.width_s * NS, end_ns=now_ns,
                               width_s=self.width_s),
            started_ns=started_ns, observed=condition.observed, baseline=None,
            threshold=condition.threshold, direction="above",
            message=("resolved: " if resolved else "") + condition.message,
        )


WORKER_RULES = {"pipeline.sink_behind", "pipeline.dead_letters", "pipeline.partition_stalled"}
PRODUCER_RULES = {"pipeline.producer_drops", "pipeline.producer_stale"}
