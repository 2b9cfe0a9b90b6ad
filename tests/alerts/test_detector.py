"""The alert engine on synthetic windows: detection delay, no false alerts on stationary noise,
hysteresis, warm-up, minimum calls, repeat interval, version seeding, and checkpointed state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from promptprof_processor.alerts import Alert, AlertEngine, parse_rules
from promptprof_processor.alerts.synthetic import (
    DEFAULT_SERIES,
    Change,
    Traffic,
    synthetic_windows,
)
from promptprof_processor.windows.figures import SeriesTags, WindowAggregate

CHANGE_AT = 60
LATENCY = {"latency_p95_ms", "latency_p99_ms"}


def engine(rules: dict[str, Any] | None = None, **options: Any) -> AlertEngine:
    return AlertEngine(parse_rules(rules or {}), **options)


def feed(
    eng: AlertEngine, windows: Sequence[WindowAggregate], partition: int = 0
) -> list[tuple[int, Alert]]:
    """Observe windows one at a time; return (window index, alert) pairs."""
    return [(i, a) for i, w in enumerate(windows) for a in eng.observe([w], partition)]


def first_firing(events: list[tuple[int, Alert]], metrics: set[str]) -> int | None:
    return next((i for i, a in events if a.state == "firing" and a.metric in metrics), None)


@pytest.mark.parametrize("method", ["mad", "ewma"])
@pytest.mark.parametrize(
    ("change", "metrics"),
    [
        (Change(CHANGE_AT, latency_factor=2.0), LATENCY),
        (Change(CHANGE_AT, CHANGE_AT + 8, error_rate=0.10), {"error_rate"}),
        (Change(CHANGE_AT, tokens_factor=1.3), {"tokens_per_call"}),
    ],
    ids=["latency_2x", "error_burst", "tokens_30pct"],
)
def test_changes_are_detected_within_two_windows(
    change: Change, metrics: set[str], method: str
) -> None:
    for seed in range(5):
        windows = synthetic_windows(CHANGE_AT + 10, seed=seed, changes=[change])
        events = feed(engine({"defaults": {"anomaly": {"method": method}}}), windows)
        assert first_firing(events, metrics) in (CHANGE_AT, CHANGE_AT + 1), (seed, events)
        assert all(i >= CHANGE_AT for i, _ in events), "nothing fires before the change"


def test_latency_alert_carries_the_numbers() -> None:
    jump = Change(CHANGE_AT, latency_factor=2)
    windows = synthetic_windows(CHANGE_AT + 2, seed=7, changes=[jump])
    alerts = [a for _, a in feed(engine(), windows) if a.rule == "anomaly.latency_p95_ms"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.state, alert.kind, alert.severity) == ("firing", "anomaly", "warning")
    assert not alert.repeat
    assert alert.baseline is not None and alert.score is not None
    assert alert.baseline < alert.threshold < alert.observed
    assert 1.6 < alert.observed / alert.baseline < 2.6
    assert alert.score > 5
    assert alert.window.end_ns == windows[-1].window_end_ns
    assert alert.started_ns == windows[CHANGE_AT].window_start_ns
    assert alert.series == DEFAULT_SERIES
    assert "latency p95" in alert.message and "above its baseline" in alert.message
    assert alert.baseline_version == "v1" and alert.previous_version is None
    assert Alert.from_json(alert.to_json()) == alert


@pytest.mark.parametrize("method", ["mad", "ewma"])
def test_stationary_noisy_traffic_raises_no_alert(method: str) -> None:
    rules = {
        "defaults": {
            "anomaly": {"method": method},
            "slo": {"latency_p95_ms": {"max": 5000}, "error_rate": {"max": 0.08},
                    "quality_mean": {"min": 0.5}},
        }
    }
    for seed, traffic in ((100, Traffic()), (101, Traffic(calls=120, load_sigma=0.08))):
        windows = synthetic_windows(1200, seed=seed, traffic=traffic)
        assert feed(engine(rules), windows) == []


def test_an_error_burst_fires_once_and_resolves() -> None:
    burst = Change(CHANGE_AT, CHANGE_AT + 6, error_rate=0.15)
    windows = synthetic_windows(CHANGE_AT + 20, seed=3, changes=[burst])
    events = [(i, a) for i, a in feed(engine(), windows) if a.metric == "error_rate"]
    assert [a.state for _, a in events] == ["firing", "resolved"]
    (fired, firing), (resolved_at, resolved) = events
    assert fired == CHANGE_AT + 1
    assert resolved_at == CHANGE_AT + 6 + 2  # three good windows in a row
    assert resolved.started_ns == firing.started_ns
    assert resolved.fingerprint == firing.fingerprint and resolved.alert_id != firing.alert_id
    assert resolved.message.startswith("resolved:")
    assert resolved.observed < resolved.threshold


def test_isolated_bad_windows_do_not_fire() -> None:
    spikes = [Change(i, i + 1, latency_factor=3.0, error_rate=0.3) for i in range(40, 200, 2)]
    windows = synthetic_windows(200, seed=5, changes=spikes)
    assert feed(engine(), windows) == []


def test_nothing_is_judged_during_warm_up() -> None:
    windows = synthetic_windows(12, seed=1, changes=[Change(3, latency_factor=4.0)])
    events = feed(engine({"defaults": {"anomaly": {"warmup_windows": 10}}}), windows)
    assert first_firing(events, LATENCY) is None or first_firing(events, LATENCY) >= 10


def test_windows_with_too_few_calls_are_neither_judged_nor_learned() -> None:
    eng = engine({"defaults": {"min_calls": 50}})
    quiet = synthetic_windows(100, seed=2, traffic=Traffic(calls=20), changes=[
        Change(50, latency_factor=5.0)
    ])
    assert feed(eng, quiet) == []
    assert all(not s.baselines for s in eng._partitions[0].series.values())


def test_slo_fires_resolves_and_reminds_after_the_repeat_interval() -> None:
    rules = {"defaults": {"slo": {"latency_p95_ms": {"max": 2500}}, "anomaly": {"enabled": False}}}
    slow = Change(20, 40, latency_factor=2.0)  # p95 ~1570 ms -> ~3140 ms
    windows = synthetic_windows(50, seed=4, changes=[slow])
    events = feed(engine(rules, repeat_interval_s=300), windows)
    assert [(i, a.state, a.repeat) for i, a in events] == [
        (21, "firing", False), (26, "firing", True), (31, "firing", True), (36, "firing", True),
        (42, "resolved", False),
    ]
    firing = events[0][1]
    assert (firing.kind, firing.severity, firing.threshold) == ("slo", "critical", 2500)
    assert firing.baseline is None  # no anomaly baseline kept for this rule set
    assert "breaks its SLO (max 2,500 ms)" in firing.message
    assert len({a.alert_id for _, a in events}) == len(events)


def test_quality_slo_fires_below_its_minimum() -> None:
    rules = {"defaults": {"slo": {"quality_mean": {"min": 0.7}}, "anomaly": {"enabled": False}}}
    windows = synthetic_windows(10, seed=4, traffic=Traffic(quality_mean=0.6))
    events = feed(engine(rules), windows)
    assert events[0][0] == 1 and events[0][1].direction == "below"


def test_a_new_version_is_judged_against_the_previous_versions_baseline() -> None:
    eng = engine()
    v1 = synthetic_windows(50, seed=8)
    assert feed(eng, v1) == []
    v2_series = DEFAULT_SERIES.model_copy(update={"prompt_version": "v2"})
    v2 = synthetic_windows(
        4, seed=9, series=v2_series, first_index=50, changes=[Change(0, tokens_factor=1.4)]
    )
    events = feed(eng, v2)
    tokens = [a for _, a in events if a.metric == "tokens_per_call"]
    assert [a.state for a in tokens] == ["firing"]
    alert = tokens[0]
    assert events[0][0] == 1  # the second window of v2: no warm-up of its own
    assert alert.series.prompt_version == "v2"
    assert (alert.baseline_version, alert.previous_version) == ("v1", "v1")
    assert "baseline from version v1: version v2 changed it" in alert.message


def test_a_new_version_without_a_change_stays_quiet() -> None:
    eng = engine()
    feed(eng, synthetic_windows(50, seed=8))
    v2_series = DEFAULT_SERIES.model_copy(update={"prompt_version": "v2"})
    assert feed(eng, synthetic_windows(200, seed=9, series=v2_series, first_index=50)) == []


def test_state_survives_a_restart() -> None:
    windows = synthetic_windows(120, seed=11, changes=[
        Change(40, 60, latency_factor=2.0), Change(90, error_rate=0.2)
    ])
    whole = feed(engine(), windows)
    first = engine()
    before = feed(first, windows[:70])
    restarted = engine()
    restarted.restore(0, first.state_bytes(0))
    after = [(i + 70, a) for i, a in feed(restarted, windows[70:])]
    assert before + after == whole
    assert len(whole) >= 3


def test_ewma_state_survives_a_restart() -> None:
    rules = {"defaults": {"anomaly": {"method": "ewma"}}}
    windows = synthetic_windows(100, seed=12, changes=[Change(80, latency_factor=2.0)])
    whole = feed(engine(rules), windows)
    first = engine(rules)
    feed(first, windows[:50])
    restarted = engine(rules)
    restarted.restore(0, first.state_bytes(0))
    after = [(i + 50, a) for i, a in feed(restarted, windows[50:])]
    assert after == [e for e in whole if e[0] >= 50]


def test_redelivered_windows_are_ignored() -> None:
    windows = synthetic_windows(70, seed=13, changes=[Change(60, latency_factor=2.0)])
    eng = engine()
    once = feed(eng, windows[:62])
    assert once and eng.observe(windows[55:62]) == []
    rest = [(i + 62, a) for i, a in feed(eng, windows[62:])]
    assert once + rest == feed(engine(), windows)
    snapshot = eng.state_bytes()
    assert eng.observe(windows) == []
    assert eng.state_bytes() == snapshot


def test_partitions_have_their_own_state() -> None:
    eng = engine()
    windows = synthetic_windows(30, seed=14)
    eng.observe(windows, partition=3)
    assert eng.owns(3) and not eng.owns(1)
    empty = eng.state_bytes(1)
    other = engine()
    other.restore(1, empty)
    assert other.series_count() == 0
    other.restore(3, eng.state_bytes(3))
    assert other.series_count() == 1
    other.forget(3)
    assert other.series_count() == 0 and not other.owns(3)


def test_bad_state_is_discarded() -> None:
    eng = engine()
    junks = (b"not json", b'{"format": 99, "series": {}}', b'{"format": 1, "series": {"k": {}}}')
    for junk in junks:
        eng.restore(0, junk)
        assert eng.owns(0) and eng.series_count() == 0


def test_changing_the_method_drops_the_baselines_but_keeps_alert_states() -> None:
    windows = synthetic_windows(25, seed=15, changes=[Change(20, latency_factor=2.0)])
    mad = engine()
    assert first_firing(feed(mad, windows), LATENCY) == 21
    ewma = engine({"defaults": {"anomaly": {"method": "ewma"}}})
    ewma.restore(0, mad.state_bytes())
    (state,) = ewma._partitions[0].series.values()
    assert state.baselines == {} and state.rules["anomaly.latency_p95_ms"].firing


def test_width_filter_and_per_prompt_rules() -> None:
    rules = {
        "defaults": {"widths_s": [60]},
        "prompts": {"strict": {"anomaly": {"threshold": 1.0, "min_relative_change": 0.0}}},
    }
    eng = engine(rules)
    assert feed(eng, synthetic_windows(200, seed=16, width_s=10, changes=[
        Change(100, latency_factor=3.0)
    ])) == []
    strict = SeriesTags(service="s", prompt_id="strict", prompt_version="v1", model="m")
    events = feed(eng, synthetic_windows(300, seed=17, series=strict))
    assert events, "a 1-sigma threshold fires on plain noise"


def test_series_idle_beyond_the_ttl_are_dropped_at_checkpoint() -> None:
    eng = engine(state_ttl_s=3600)
    old = SeriesTags(service="s", prompt_id="old", prompt_version="v1", model="m")
    eng.observe(synthetic_windows(5, seed=18, series=old))
    eng.observe(synthetic_windows(5, seed=19, first_index=100))
    assert eng.series_count() == 2
    eng.state_bytes()
    assert eng.series_count() == 1


def test_seeding_finds_the_previous_version_on_any_partition_held() -> None:
    v1, v2, v3 = (
        DEFAULT_SERIES.model_copy(update={"prompt_version": v}) for v in ("v1", "v2", "v3")
    )
    first = engine()
    feed(first, synthetic_windows(40, seed=20, series=v1), partition=0)
    eng = engine()
    eng.restore(0, first.state_bytes(0))
    feed(eng, synthetic_windows(5, seed=21, series=v2, first_index=40), partition=1)
    states = {s.version: s for p in (0, 1) for s in eng._partitions[p].series.values()}
    assert states["v2"].seeded_from == "v1"
    eng.forget(0)
    eng.restore(1, eng.state_bytes(1))  # a reload of the same partition keeps one index entry
    feed(eng, synthetic_windows(5, seed=22, series=v3, first_index=45), partition=2)
    (v3_state,) = eng._partitions[2].series.values()
    assert v3_state.seeded_from == "v2"
    assert len(eng._families) == 1 and len(next(iter(eng._families.values()))) == 2


def test_state_is_compact() -> None:
    eng = engine()
    for i in range(10):
        series = DEFAULT_SERIES.model_copy(update={"prompt_id": f"p{i}"})
        eng.observe(synthetic_windows(60, seed=i, series=series))
    assert len(eng.state_bytes()) / eng.series_count() < 3000


def test_quiet_hours_with_few_calls_raise_no_alert() -> None:
    """Busy and quiet blocks (300 and 30 calls per window): quiet windows are noisier and
    mostly error-free, which must not read as a change."""
    windows = [
        w for block in range(12)
        for w in synthetic_windows(
            100, seed=300 + block, traffic=Traffic(calls=300 if block % 2 == 0 else 30),
            first_index=block * 100,
        )
    ]
    for method in ("mad", "ewma"):
        assert feed(engine({"defaults": {"anomaly": {"method": method}}}), windows) == []


def test_a_quieter_new_version_seeded_from_a_busy_one_stays_quiet() -> None:
    eng = engine()
    feed(eng, synthetic_windows(100, seed=30, traffic=Traffic(calls=400)))
    v2 = DEFAULT_SERIES.model_copy(update={"prompt_version": "v2"})
    quiet = synthetic_windows(300, seed=31, series=v2, traffic=Traffic(calls=40), first_index=100)
    assert feed(eng, quiet) == []
