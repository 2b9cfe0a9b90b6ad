"""One incident, one thread: a rule firing on several widths of one series notifies once."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.alerts import Alert, AlertEngine, parse_rules
from promptprof_processor.alerts.detector import Step
from promptprof_processor.alerts.state import Incident
from promptprof_processor.alerts.synthetic import Change, Traffic, synthetic_windows
from promptprof_processor.windows.figures import WindowAggregate

P95 = "anomaly.latency_p95_ms"


def two_widths(seed: int) -> list[WindowAggregate]:
    """A 2x latency regression from 1 h to 2 h, seen on 10 s and 60 s windows of one series."""
    minutes = synthetic_windows(150, seed=seed, changes=[Change(60, 120, latency_factor=2.0)])
    tens = synthetic_windows(
        900, seed=seed + 1, width_s=10, traffic=Traffic(calls=40),
        changes=[Change(360, 720, latency_factor=2.0)],
    )
    return sorted([*minutes, *tens], key=lambda w: (w.window_end_ns, w.width_s))


def p95_events(rules: dict[str, Any], seed: int) -> list[Alert]:
    alerts = AlertEngine(parse_rules(rules)).observe(two_widths(seed))
    return [a for a in alerts if a.rule == P95]


def test_a_regression_on_two_widths_is_one_firing_and_one_resolution() -> None:
    for seed in range(4):
        events = p95_events({}, seed)
        assert [a.state for a in events] == ["firing", "resolved"], seed
        firing, resolved = events
        assert firing.fingerprint == resolved.fingerprint
        assert firing.started_ns == resolved.started_ns
        assert resolved.window.width_s == 60, "resolved when the last width firing is back"


def test_only_the_paging_widths_notify() -> None:
    events = p95_events({"defaults": {"page_widths_s": [60]}}, 1)
    assert [(a.state, a.window.width_s) for a in events] == [("firing", 60), ("resolved", 60)]
    tens_only = {"defaults": {"page_widths_s": [10]}}
    assert next(a.window.width_s for a in p95_events(tens_only, 1)) == 10


def test_a_width_that_may_not_page_stays_silent_alone() -> None:
    tens = synthetic_windows(150, seed=5, width_s=10, changes=[Change(100, latency_factor=2.0)])
    rules = parse_rules({"defaults": {"page_widths_s": [60]}})
    assert AlertEngine(rules).observe(tens) == []


steps = st.lists(
    st.tuples(st.sampled_from([10, 60]), st.sampled_from([Step.FIRE, Step.STILL, Step.RESOLVE])),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_an_incident_fires_once_and_resolves_when_its_last_width_does(
    sequence: list[tuple[int, Step]],
) -> None:
    engine = AlertEngine(repeat_interval_s=1e9)
    incident: Incident | None = None
    firing: set[int] = set()
    events: list[str] = []
    window = synthetic_windows(1, seed=0)[0]
    for width, step in sequence:
        if (step is Step.FIRE) == (width in firing):  # only a quiet width fires, a firing one
            continue  # goes on or resolves
        incident = incident or Incident()
        w = window.model_copy(update={"width_s": width})
        if step is Step.FIRE:
            firing = firing | {width}
        elif step is Step.RESOLVE:
            firing = firing - {width}
        event = engine._incident_step(incident, step, w, pages=True)
        if event is not None:
            events.append(event[0])
        assert set(incident.widths) == firing
        if not incident.widths:
            incident = None
            assert not events or events[-1] == "resolved"
    for first, second in itertools.pairwise(events):
        assert first != second, "firing and resolved alternate: one firing per incident"
