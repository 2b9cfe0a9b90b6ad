"""The pipeline rules and their alerts: each rule fires through a real webhook receiver (the
alert dispatcher and receiver of the other alerts), once per incident, and resolves."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.alerts import AlertDispatcher, WebhookReceiver
from promptprof_processor.alerts.settings import AlertSettings, GroupingSettings, ReceiverSettings
from promptprof_processor.health.figures import PartitionFigures, WorkerFigures
from promptprof_processor.health.rules import (
    PRODUCER_RULES,
    WORKER_RULES,
    Condition,
    Incidents,
    WorkerJudge,
    producer_conditions,
)
from promptprof_processor.health.settings import PipelineAlertSettings
from promptprof_processor.health.status import ProducerStatus
from promptprof_processor.settings import ProcessorSettings

NS = 1_000_000_000
RULES = PipelineAlertSettings(sink_behind_s=10, dead_letters_per_s=1, partition_stalled_s=5)


def _partition(next_offset: int, lag: int, dead: int = 0) -> PartitionFigures:
    return PartitionFigures(0, lag, 0.0, 0, 0.0, 0, 0, 0, 0, 0.0, next_offset,
                            {"not_json": dead} if dead else {})


def _figures(second: int, *, offset: int = 100, lag: int = 0, dead: int = 0,
             sink_age_s: float = 0.0) -> WorkerFigures:
    return WorkerFigures("w1", second * NS, True, [_partition(offset, lag, dead)],
                         sink_backlog=5 if sink_age_s else 0, sink_oldest_unwritten_s=sink_age_s)


def _producer(**changes: Any) -> ProducerStatus:
    base = ProducerStatus("svc", "prod", "h1", "42", age_s=1.0, final=False, stale=False,
                          drops_in_window=0.0, last={})
    return replace(base, **changes)


def _rules(conditions: list[Condition]) -> set[str]:
    return {c.rule for c in conditions}


def test_a_partition_with_records_that_keeps_its_position_is_stalled_after_the_limit() -> None:
    judge = WorkerJudge(RULES)
    assert _rules(judge.conditions(_figures(0, lag=10))) == set()
    assert _rules(judge.conditions(_figures(5, lag=10))) == set()  # 5 s: not more than 5
    assert _rules(judge.conditions(_figures(6, lag=10))) == {"pipeline.partition_stalled"}
    assert _rules(judge.conditions(_figures(7, offset=101, lag=10))) == set()  # it moved


def test_a_partition_without_records_to_read_is_never_stalled() -> None:
    judge = WorkerJudge(RULES)
    for second in range(0, 100, 10):
        assert judge.conditions(_figures(second)) == []


def test_dead_letters_above_the_rate_and_the_sink_behind_the_limit() -> None:
    judge = WorkerJudge(RULES)
    assert judge.conditions(_figures(0, dead=0)) == []
    assert judge.conditions(_figures(10, dead=10)) == []  # 1/s: not above 1/s
    assert _rules(judge.conditions(_figures(20, dead=21))) == {"pipeline.dead_letters"}
    assert _rules(judge.conditions(_figures(30, dead=21, sink_age_s=10.5))) == {
        "pipeline.sink_behind"}


def test_producer_rules() -> None:
    assert producer_conditions([_producer()], RULES) == []
    assert _rules(producer_conditions([_producer(stale=True)], RULES)) == {
        "pipeline.producer_stale"}
    assert _rules(producer_conditions([_producer(drops_in_window=3.0)], RULES)) == {
        "pipeline.producer_drops"}
    quiet = RULES.model_copy(update={"producer_drops": False})
    assert producer_conditions([_producer(drops_in_window=3.0)], quiet) == []


@given(st.lists(st.sets(st.sampled_from(["a", "b", "c"])), max_size=30))
def test_each_incident_fires_once_and_resolves_once(steps: list[set[str]]) -> None:
    conditions = {
        name: producer_conditions([_producer(host=name, stale=True)], RULES)[0]
        for name in "abc"
    }
    incidents = Incidents(1.0)
    events: dict[str, list[str]] = {name: [] for name in conditions}
    by_fingerprint = {c.fingerprint: name for name, c in conditions.items()}
    for second, holding in enumerate(steps, start=1):
        alerts = incidents.update([conditions[n] for n in sorted(holding)], PRODUCER_RULES,
                                  second * NS)
        for alert in alerts:
            events[by_fingerprint[alert.fingerprint]].append(alert.state)
    for name, states in events.items():
        rises = sum(1 for before, now in zip([set(), *steps], steps, strict=False)
                    if name in now and name not in before)
        assert states.count("firing") == rises
        assert states[::2] == ["firing"] * len(states[::2])
        assert states[1::2] == ["resolved"] * len(states[1::2])


def test_rules_not_judged_this_time_do_not_resolve() -> None:
    incidents = Incidents(1.0)
    stale = producer_conditions([_producer(stale=True)], RULES)
    assert [a.state for a in incidents.update(stale, PRODUCER_RULES, NS)] == ["firing"]
    # a worker without partition 0 judges only the worker rules: the producer alert stays open
    assert incidents.update([], WORKER_RULES, 2 * NS) == []
    assert [a.state for a in incidents.update([], PRODUCER_RULES, 3 * NS)] == ["resolved"]


async def _deliver_all(receiver: WebhookReceiver) -> list[Any]:
    settings = AlertSettings(
        receivers=[ReceiverSettings(name="r", url=receiver.url)],
        grouping=GroupingSettings(group_wait_s=0, group_interval_s=0.1),
        publish_topic=False, write_influx=False)
    dispatcher = AlertDispatcher(ProcessorSettings(), settings)
    await dispatcher.start()
    judge, incidents = WorkerJudge(RULES), Incidents(1.0)
    timeline = [
        _figures(0, lag=10, dead=0),
        _figures(10, lag=10, dead=30, sink_age_s=11.0),  # stalled 10 s, 3/s, sink behind
        _figures(20, offset=200, lag=0, dead=30),  # all well again
    ]
    producers = [[_producer(stale=True), _producer(pid="7", drops_in_window=5.0)], []]
    for figures, found in zip(timeline, [*producers, []], strict=True):
        holding = judge.conditions(figures) + producer_conditions(found, RULES)
        dispatcher.submit(incidents.update(holding, WORKER_RULES | PRODUCER_RULES,
                                           figures.time_ns))
    deadline = time.monotonic() + 20
    while len(receiver.alerts()) < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await dispatcher.close(timeout_s=5)
    return receiver.alerts()


def test_every_pipeline_rule_fires_and_resolves_through_a_real_receiver() -> None:
    with WebhookReceiver(None) as receiver:
        alerts = asyncio.run(_deliver_all(receiver))
    states = {(a["rule"], a["state"]) for a in alerts}
    rules = WORKER_RULES | PRODUCER_RULES
    assert states == {(r, s) for r in rules for s in ("firing", "resolved")}
    assert len(alerts) == 10
    assert all(a["kind"] == "pipeline" and a["series"]["prompt_id"] == "pipeline"
               for a in alerts)
