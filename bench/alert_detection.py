"""Benchmark: how fast the alert engine detects injected changes, how often it cries wolf on
stationary traffic, and what detection costs the stream processor.

Detection delay (default rules: median/MAD baseline of 30 windows, warm-up 10, 5 robust
standard deviations, 2 bad windows to fire, 3 good ones to resolve). Each trial is one series of
seeded synthetic windows (:mod:`promptprof_processor.alerts.synthetic`: ~200 calls per 60 s
window, log-normal latencies with a per-window load factor, 1% errors, log-normal tokens) with
a change from window 60 on: latency x2, an error burst (1% -> 10% for 8 windows), or tokens per
call +30%. The delay is counted in windows, the first changed window being 1: a rule that fires
on the second bad window in a row reports 2 (1 happens when the window before the change was
already bad by chance). ``delay_windows_*`` is the worst trial, ``*_mean`` the mean,
``within_2_windows_rate_*`` the share of trials detected within 2 windows, ``missed_*`` the
trials not detected within 12 windows (counted as 13).

False alerts: stationary synthetic series of 1000 windows each (a mix of 200, 100 and 60 calls
per window and of load jitter); ``false_alerts_per_1000_windows`` = firing events per 1000
windows (every rule of the default set). The same for the EWMA baseline as an extra figure.

Throughput (in-process, no Kafka, same records for both): call-event envelopes of 20 series
(skewed shares; each series' envelope is cut at 500 events or every 2 s of event time, as the
producer's linger does) over 10 s and 60 s windows, fed to
:class:`~promptprof_processor.runtime.partition.PartitionRun` per partition (decode, validate,
aggregate, close by watermark) alone, and with :meth:`AlertEngine.observe` on every closed
window. Rounds alternate between the two; the best round of each is kept (the machine's
noise only ever slows a round down).
``throughput_ratio_detection_on_vs_off`` = windows/s with detection / windows/s without.
``detector_only_windows_per_s`` times the engine alone on the same closed windows. The
``*_sparse`` figures repeat this with a tenth of the events (the same windows, ~10 times fewer
calls in each), where the detector's share of the work is larger.

Holding and resolving (default rules). ``false_resolves_sustained_2x``: resolutions of a
latency rule (p95 or p99) sent while a 2x latency regression is still active, over seeded trials
of 60 normal windows, 180 regressed ones and 20 recovered ones (``holding_trials`` of them);
``resolve_delay_windows_max``: windows from the recovery (the first recovered window is 1) to
the resolution of each latency rule that fired, worst over the trials. A firing anomaly resolves
on its level pooled over the last 3 windows, so a resolution may come on the 2nd recovered
window when the last regressed window was already low enough to pool under the band.

``false_alerts_per_1000_windows_sampled``: stationary series recorded at sample_rate 0.05
(4000, 2000, 800 and 400 calls per window: about 200, 100, 40 and 20 recorded events), firing
events per 1000 windows. ``false_alerts_per_1000_windows_autocorrelated``: stationary series
whose load factor is AR(1) with rho 0.8 (the synthetic default load spread, 0.05) plus a daily
swing of +-30 % of calls and latency over 24 h, one day of 60 s windows each (200, 100 and 60
calls per window); ``..._autocorrelated_load_sigma_0_1`` doubles the load spread.

``alerts_per_incident``: one 2x latency regression of one series seen on 10 s (~40 calls) and
60 s (~200 calls) windows; the most non-reminder firing events any incident (series and rule)
gave from the start of the regression on, over the trials (before incidents spanned widths this
was 2).

``notifications_per_receiver_provider_outage``: 500 series of one service and model (a
provider) go from 1 % to 30 % errors at once; the engine's alerts reach one receiver's grouper
(:class:`~promptprof_processor.alerts.grouping.Grouper`, default grouping: by service and model,
10 s group wait, 300 s group interval) at their window's end; the notifications it releases in
the first 5 minutes after the first alert, stepped in event time second by second (the
dispatcher runs the same grouper on its clock). ``outage_series_named`` counts the distinct
series those notifications list.

``burn_rate_delay_s_errors_10pct``: a 99.9 % success SLO with the default burn windows;
10 s windows of ~35 calls with 0.05 % errors for 8 h, then 10 % errors; seconds from the start of
the burst to the end of the window that fires ``burn.success.3600s``, worst over the trials
(``..._60s_windows``: the same on 60 s windows). ``burn_rate_false_pages_per_day``: burn-rate
firing events per day of traffic that spends half the budget evenly (0.05 % errors), 60 s
windows of ~200 calls.

Usage: ``.venv/bin/python bench/alert_detection.py [--quick]``; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import _common

from promptprof._envelope import encode_envelope
from promptprof_processor.alerts import Alert, AlertEngine, GroupingSettings, parse_rules
from promptprof_processor.alerts.grouping import Grouper
from promptprof_processor.alerts.synthetic import DEFAULT_SERIES, Change, Traffic, synthetic_windows
from promptprof_processor.runtime.partition import Clock, Output, PartitionRun
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.windows.figures import WindowAggregate

CHANGE_AT = 60
AFTER = 12
CHANGES = {
    "latency_2x": (Change(CHANGE_AT, latency_factor=2.0), {"latency_p95_ms", "latency_p99_ms"}),
    "error_burst": (Change(CHANGE_AT, CHANGE_AT + 8, error_rate=0.10), {"error_rate"}),
    "tokens_30pct": (Change(CHANGE_AT, tokens_factor=1.3), {"tokens_per_call"}),
}
STATIONARY = (
    Traffic(),
    Traffic(calls=100, load_sigma=0.08),
    Traffic(calls=60),
    Traffic(calls=200, latency_sigma=0.7, error_rate=0.03),
)
SERIES = 20
PARTITIONS = 4
BATCH = 500
LINGER_S = 2  # a series' envelope is sent when full or every LINGER_S seconds of event time


@dataclass(frozen=True)
class Plan:
    """How much each part measures."""

    trials: int
    stationary_series: int
    events: int
    span_s: int
    rounds: int
    holding_trials: int
    budget_days: int
    realistic_series: int


FULL = Plan(trials=150, stationary_series=20, events=600_000, span_s=1200, rounds=5,
            holding_trials=120, budget_days=10, realistic_series=12)
QUICK = Plan(trials=30, stationary_series=8, events=150_000, span_s=300, rounds=3,
             holding_trials=30, budget_days=3, realistic_series=4)
LATENCY = {"latency_p95_ms", "latency_p99_ms"}
HOLD_START, HOLD_END, HOLD_AFTER = 60, 240, 20
SAMPLED = tuple(Traffic(calls=c, sample_rate=0.05) for c in (4000.0, 2000.0, 800.0, 400.0))
AUTOCORRELATED = tuple(
    Traffic(calls=c, load_rho=0.8, daily_swing=0.3) for c in (200.0, 100.0, 60.0)
)
OUTAGE_SERIES = 500
SUCCESS_999 = {"defaults": {"anomaly": {"enabled": False},
                            "error_budget": {"success": {"objective": 0.999}}}}


# -- detection delay and false alerts -------------------------------------------------------------


def delay(change: Change, metrics: set[str], seed: int, method: str) -> int:
    """Windows from the change to the first firing of one of ``metrics`` (first changed = 1)."""
    engine = AlertEngine(parse_rules({"defaults": {"anomaly": {"method": method}}}))
    windows = synthetic_windows(CHANGE_AT + AFTER, seed=seed, changes=[change])
    for index, window in enumerate(windows):
        for alert in engine.observe([window]):
            if index >= CHANGE_AT and alert.state == "firing" and alert.metric in metrics:
                return index - CHANGE_AT + 1
    return AFTER + 1


def delays(plan: Plan, method: str) -> dict[str, Any]:
    """Worst and mean delay and misses of every change."""
    figures: dict[str, Any] = {}
    for name, (change, metrics) in CHANGES.items():
        found = [delay(change, metrics, 10_000 + seed, method) for seed in range(plan.trials)]
        figures[f"delay_windows_{name}"] = max(found)
        figures[f"delay_windows_{name}_mean"] = statistics.fmean(found)
        figures[f"missed_{name}"] = sum(d > AFTER for d in found)
        figures[f"within_2_windows_rate_{name}"] = sum(d <= 2 for d in found) / len(found)
        _common.log("delays", change=name, method=method, worst=max(found),
                    mean=round(statistics.fmean(found), 2))
    return figures


def false_alerts(plan: Plan, method: str) -> tuple[float, int]:
    """Firing events per 1000 stationary windows, and the windows judged."""
    rules = parse_rules({"defaults": {"anomaly": {"method": method}}})
    fired = windows = 0
    for seed in range(plan.stationary_series):
        traffic = STATIONARY[seed % len(STATIONARY)]
        series = synthetic_windows(1000, seed=20_000 + seed, traffic=traffic)
        fired += sum(a.state == "firing" for a in AlertEngine(rules).observe(series))
        windows += len(series)
    _common.log("stationary", method=method, windows=windows, firing=fired)
    return fired / windows * 1000, windows


# -- holding, sampling, realistic traffic ---------------------------------------------------------


def holding(plan: Plan) -> dict[str, Any]:
    """False resolutions during a sustained 2x regression and the delay of the true ones."""
    false_resolves, delays = 0, []
    change = Change(HOLD_START, HOLD_END, latency_factor=2.0)
    for seed in range(plan.holding_trials):
        windows = synthetic_windows(HOLD_END + HOLD_AFTER, seed=30_000 + seed, changes=[change])
        engine = AlertEngine()
        for index, window in enumerate(windows):
            for alert in engine.observe([window]):
                if alert.metric not in LATENCY or alert.state != "resolved":
                    continue
                if HOLD_START <= index < HOLD_END:
                    false_resolves += 1
                elif index >= HOLD_END:
                    delays.append(index - HOLD_END + 1)
    _common.log("holding", false_resolves=false_resolves, resolutions=len(delays))
    return {
        "false_resolves_sustained_2x": false_resolves,
        "resolve_delay_windows_max": max(delays, default=HOLD_AFTER + 1),
        "resolve_delay_windows_mean": statistics.fmean(delays) if delays else None,
        "resolve_within_3_windows_rate": sum(d <= 3 for d in delays) / max(1, len(delays)),
        "holding_trials": plan.holding_trials,
        "holding_resolutions": len(delays),
    }


def false_alerts_of(traffics: Sequence[Traffic], series: int, windows: int, seed: int) -> float:
    """Firing events per 1000 windows of stationary series of ``traffics`` (round robin)."""
    fired = judged = 0
    for n in range(series):
        found = synthetic_windows(windows, seed=seed + n, traffic=traffics[n % len(traffics)])
        fired += sum(a.state == "firing" for a in AlertEngine().observe(found))
        judged += len(found)
    return fired / judged * 1000


def realistic(plan: Plan) -> dict[str, Any]:
    """False alerts under sampling and on autocorrelated traffic with a daily swing."""
    loud = tuple(replace(t, load_sigma=0.1) for t in AUTOCORRELATED)
    figures = {
        "false_alerts_per_1000_windows_sampled": false_alerts_of(
            SAMPLED, plan.realistic_series, 1000, 40_000),
        "false_alerts_per_1000_windows_autocorrelated": false_alerts_of(
            AUTOCORRELATED, plan.realistic_series, 1440, 50_000),
        "false_alerts_per_1000_windows_autocorrelated_load_sigma_0_1": false_alerts_of(
            loud, plan.realistic_series, 1440, 50_000),
        "realistic_series": plan.realistic_series,
    }
    _common.log("realistic", **{k: round(v, 3) for k, v in figures.items()})
    return figures


# -- incidents and storms -------------------------------------------------------------------------


def alerts_per_incident(plan: Plan) -> int:
    """The most first firings one incident gave, for a regression seen on two widths."""
    worst = 0
    for seed in range(max(5, plan.holding_trials // 6)):
        minutes = synthetic_windows(150, seed=60_000 + seed, changes=[
            Change(60, 120, latency_factor=2.0)])
        tens = synthetic_windows(900, seed=61_000 + seed, width_s=10, traffic=Traffic(calls=40),
                                 changes=[Change(360, 720, latency_factor=2.0)])
        ordered = sorted([*minutes, *tens], key=lambda w: (w.window_end_ns, w.width_s))
        change_ns = minutes[60].window_start_ns
        firings: dict[str, int] = {}
        for alert in AlertEngine().observe(ordered):
            if alert.state == "firing" and not alert.repeat and alert.window.end_ns > change_ns:
                firings[alert.fingerprint] = firings.get(alert.fingerprint, 0) + 1
        worst = max(worst, *firings.values())
    return worst


def provider_outage() -> dict[str, Any]:
    """Notifications one receiver gets in the first 5 minutes of a 500-series outage."""
    engine = AlertEngine()
    outage = Change(12, error_rate=0.30)
    arrivals: list[tuple[float, Alert]] = []
    for n in range(OUTAGE_SERIES):
        series = DEFAULT_SERIES.model_copy(update={"prompt_id": f"prompt-{n}"})
        windows = synthetic_windows(18, seed=70_000 + n, series=series, changes=[outage],
                                    traffic=Traffic(calls=60))
        for window in windows:
            arrivals += [(window.window_end_ns / NS_PER_S, a) for a in engine.observe([window])]
    arrivals.sort(key=lambda pair: pair[0])
    grouper = Grouper(GroupingSettings())
    first = arrivals[0][0]
    notes = []
    pending = iter(arrivals)
    upcoming = next(pending, None)
    for second in range(301):
        now = first + second
        while upcoming is not None and upcoming[0] <= now:
            grouper.add(upcoming[1], now)
            upcoming = next(pending, None)
        notes += grouper.due(now)
    named = {a.series.prompt_id for note in notes for a in note.alerts}
    _common.log("outage", alerts=len(arrivals), notifications=len(notes), named=len(named))
    return {
        "notifications_per_receiver_provider_outage": len(notes),
        "outage_series_named": len(named),
        "outage_alerts": len(arrivals),
    }


# -- error budgets --------------------------------------------------------------------------------


def burn_delay(trials: int, width_s: int) -> float:
    """Worst seconds from a 10 % error burst to the fast-burn page (99.9 % SLO)."""
    per_minute = 60 // width_s
    start = 8 * 60 * per_minute
    calls = 210.0 / per_minute
    worst = 0.0
    for seed in range(trials):
        windows = synthetic_windows(
            start + 30 * per_minute, seed=80_000 + seed, width_s=width_s,
            traffic=Traffic(calls=calls, error_rate=0.0005),
            changes=[Change(start, error_rate=0.10)],
        )
        pages = [a for a in AlertEngine(parse_rules(SUCCESS_999)).observe(windows)
                 if a.rule == "burn.success.3600s" and a.state == "firing"]
        begin = windows[start].window_start_ns
        seconds = (pages[0].window.end_ns - begin) / NS_PER_S if pages else math.inf
        worst = max(worst, seconds)
    return worst


def burn_false_pages(plan: Plan) -> float:
    """Burn-rate firings per day of traffic spending half the budget evenly."""
    pages = 0
    for day in range(plan.budget_days):
        windows = synthetic_windows(1440, seed=90_000 + day, first_index=day * 1440,
                                    traffic=Traffic(error_rate=0.0005))
        alerts = AlertEngine(parse_rules(SUCCESS_999)).observe(windows)
        pages += sum(a.state == "firing" and not a.repeat for a in alerts)
    return pages / plan.budget_days


def budgets(plan: Plan) -> dict[str, Any]:
    """The burn-rate figures."""
    trials = max(5, plan.holding_trials // 6)
    figures = {
        "burn_rate_delay_s_errors_10pct": burn_delay(trials, 10),
        "burn_rate_delay_s_errors_10pct_60s_windows": burn_delay(trials, 60),
        "burn_rate_false_pages_per_day": burn_false_pages(plan),
        "burn_rate_days": plan.budget_days,
    }
    _common.log("budgets", **figures)
    return figures


# -- throughput -----------------------------------------------------------------------------------


def build_records(plan: Plan, seed: int = 7) -> tuple[list[tuple[int, bytes]], int, int]:
    """Envelopes of ``plan.events`` call events; returns (records, events, end of data in ns)."""
    rng = random.Random(seed)
    shares = [1.0 / (1 + i) ** 0.8 for i in range(SERIES)]
    rates = [plan.events / plan.span_s * s / sum(shares) for s in shares]
    start_ns = (time.time_ns() // (60 * NS_PER_S) - plan.span_s // 60 - 3) * 60 * NS_PER_S
    pending: list[list[dict[str, Any]]] = [[] for _ in range(SERIES)]
    records: list[tuple[int, bytes]] = []
    count = 0
    for second in range(plan.span_s):
        for series, rate in enumerate(rates):
            for _ in range(_poisson(rng, rate)):
                pending[series].append(_event(rng, series, start_ns + second * NS_PER_S, count))
                count += 1
            if len(pending[series]) >= BATCH or second % LINGER_S == LINGER_S - 1:
                records.append((series % PARTITIONS, encode_envelope(pending[series])))
                pending[series] = []
    return records, count, start_ns + plan.span_s * NS_PER_S


def _poisson(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, mean**0.5)))


def _event(rng: random.Random, series: int, second_ns: int, n: int) -> dict[str, Any]:
    failed = rng.random() < 0.01
    return {
        "schema_version": 1,
        "event_id": f"b{n:x}",
        "start_time_unix_nano": second_ns + rng.randrange(NS_PER_S),
        "service.name": "bench",
        "promptprof.prompt.id": f"prompt-{series % 10}",
        "promptprof.prompt.version": f"v{1 + series // 10}",
        "gen_ai.request.model": "gpt-4o-mini" if series % 2 else "claude-haiku",
        "promptprof.latency_ms": rng.lognormvariate(6.5, 0.5),
        "gen_ai.server.time_to_first_token": rng.lognormvariate(5.3, 0.4),
        "gen_ai.usage.input_tokens": int(rng.lognormvariate(6.6, 0.4)),
        "gen_ai.usage.output_tokens": int(rng.lognormvariate(5.0, 0.4)),
        "promptprof.cost.usd": 0.0002 + rng.random() * 0.0001,
        "promptprof.status": "error" if failed else "ok",
        "error.type": "rate_limit" if failed else None,
    }


def one_pass(
    records: Sequence[tuple[int, bytes]], end_ns: int, detect: bool
) -> tuple[float, list[WindowAggregate], int]:
    """Seconds to handle every record (and close the rest), the closed windows, alerts."""
    settings = WindowSettings(widths_s=[10, 60], allowed_lateness_s=5)
    engine = AlertEngine() if detect else None
    runs: dict[int, PartitionRun] = {}
    clock = Clock(end_ns + 3600 * NS_PER_S, time.monotonic())
    outputs: list[Output] = []
    started = time.perf_counter()
    for partition, value in records:
        run = runs.get(partition)
        if run is None:
            if engine is not None:
                engine.restore(partition, None)
            run = runs[partition] = PartitionRun(partition, settings, next_offset=0,
                                                 alerts=engine, idle_timeout_s=0.0)
        outputs += run.take(run.next_offset, value, clock)
    for run in runs.values():
        outputs += run.close_idle(clock)
    elapsed = time.perf_counter() - started
    closed = [o.window for o in outputs if o.window is not None]
    return elapsed, closed, sum(o.alert is not None for o in outputs)


def throughput(plan: Plan) -> dict[str, Any]:
    """Windows/s with and without detection over the same records, alternating rounds."""
    records, events, end_ns = build_records(plan)
    return measure(records, events, end_ns, plan.rounds)


def measure(
    records: Sequence[tuple[int, bytes]], events: int, end_ns: int, rounds: int
) -> dict[str, Any]:
    """The throughput figures of one set of records."""
    _common.log("records built", records=len(records), events=events)
    rates: dict[bool, list[float]] = {False: [], True: []}
    closed: list[WindowAggregate] = []
    alerts = 0
    for round_ in range(rounds):
        for detect in (False, True) if round_ % 2 == 0 else (True, False):
            seconds, closed, fired = one_pass(records, end_ns, detect)
            rates[detect].append(len(closed) / seconds)
            alerts = fired if detect else alerts
            _common.log("pass", detect=detect, windows=len(closed), s=round(seconds, 3))
    on, off = max(rates[True]), max(rates[False])
    return {
        "throughput_ratio_detection_on_vs_off": on / off,
        "windows_per_s_detection_on": on,
        "windows_per_s_detection_off": off,
        "detector_only_windows_per_s": detector_only(closed),
        "throughput_events": events,
        "throughput_windows": len(closed),
        "throughput_events_per_window": events * 2 / len(closed),
        "throughput_alerts": alerts,
    }


def detector_only(windows: list[WindowAggregate]) -> float:
    """Windows/s of the engine alone, in event-time order."""
    ordered = sorted(windows, key=lambda w: w.window_end_ns)
    engine = AlertEngine()
    started = time.perf_counter()
    engine.observe(ordered)
    return len(ordered) / (time.perf_counter() - started)


def main() -> None:
    """Run every part and print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer trials, windows and events")
    args = parser.parse_args()
    _common.setup()
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    figures: dict[str, Any] = {"quick": args.quick, "trials": plan.trials}
    figures |= delays(plan, "mad")
    false_rate, windows = false_alerts(plan, "mad")
    figures |= {"false_alerts_per_1000_windows": false_rate, "stationary_windows": windows}
    figures["false_alerts_per_1000_windows_ewma"] = false_alerts(plan, "ewma")[0]
    ewma = delays(plan, "ewma")
    figures |= {f"{k}_ewma": v for k, v in ewma.items() if k.startswith(("delay", "within"))}
    figures |= holding(plan)
    figures |= realistic(plan)
    figures["alerts_per_incident"] = alerts_per_incident(plan)
    figures |= provider_outage()
    figures |= budgets(plan)
    figures |= throughput(plan)
    sparse = replace(plan, events=plan.events // 10)
    records, events, end_ns = build_records(sparse)
    figures |= {f"{k}_sparse": v for k, v in measure(records, events, end_ns, plan.rounds).items()}
    figures["elapsed_s"] = time.monotonic() - started
    _common.emit("alert_detection", figures)


if __name__ == "__main__":
    main()
