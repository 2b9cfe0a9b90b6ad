"""The fault and load scenario: the real stack under sustained traffic, one fault after another.

Stack (private, loopback, temporary folder, stopped on exit): Tansu (memory storage), influxd
1.6.7, two ``promptprof worker`` subprocesses of one consumer group, a webhook receiver
(:class:`WebhookReceiver`, in this process) that the workers' alerts are routed to.

Each phase drives the demo :class:`TrafficGenerator` through its own :class:`Profiler`, whose
``service_name`` is ``chaos-<phase>``: what a phase sent (the profiler's ``sent_events``) is
compared with what InfluxDB counted for that service (``sum(events)`` of ``llm_window``) and
with the events dropped by a documented policy (``late_events``: events late for every width;
the producer's ``dropped``: buffer full). Phases, in order: baseline, broker restart, worker
SIGKILL and restart, InfluxDB down for 60 s, webhook receiver down, a 10x burst, a malformed
flood, a label with up to 1,000,000 distinct values (200,000 with ``--quick``), producer clock
skew. The last line printed is one JSON summary.

Run: ``python chaos/run.py [--quick]`` (``make chaos``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from promptprof import KafkaSettings, Profiler, Settings, load_settings
from promptprof._envelope import encode_envelope
from promptprof._profiler import make_spec
from promptprof_processor.alerts.receiver import WebhookReceiver
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_tools.demo.traffic import Injection, TrafficGenerator
from promptprof_tools.demo.worker import DEMO_RULES
from promptprof_tools.stack.influxdb import InfluxDB
from promptprof_tools.stack.ports import free_port
from promptprof_tools.stack.tansu import TansuBroker
from promptprof_tools.stack.topics import create_topics, topic_names

NS = 1_000_000_000
TOPICS = ProcessorTopicSettings()
PARTITIONS = 4
WIDTH_S = 5
LATENESS_S = 2
CAP = 100
RATE = 200.0
SECRET_ENV = "PROMPTPROF_CHAOS_WEBHOOK_SECRET"
SECRET = "chaos-secret"
FAUST_ENV = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_REBALANCE_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}


def log(message: str, **fields: Any) -> None:
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"{time.strftime('%H:%M:%S')} {message} {extra}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Worker:
    """One ``promptprof worker`` child; restartable."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name, self.env, self.log_path = name, env, log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.crashes = 0
        self.supervised = True

    def start(self) -> None:
        binary = Path(sys.executable).parent / "promptprof"
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [str(binary), "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.popen is not None and self.alive():
            self.popen.kill()
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Result:
    """What one phase showed."""

    name: str
    sent: int = 0
    counted: int = 0
    late_dropped: int = 0
    producer_dropped: int = 0
    duplicated: int = 0
    lost: int = 0
    dead_lettered: int = 0
    recovery_s: float | None = None  # from the end of the fault until every call counted
    recovery_bound_s: float = 60.0
    workers_crashed: int = 0
    ok: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


class Stack:
    """Tansu, influxd, topics, a webhook receiver and two workers in a temporary folder."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="promptprof-chaos-"))
        (self.tmp / "tansu").mkdir()
        self.tansu = TansuBroker(free_port(), self.tmp / "tansu")
        self.influx = InfluxDB(free_port(), free_port(), self.tmp / "influx")
        self.receiver_port = free_port()
        self.receiver = WebhookReceiver(SECRET, port=self.receiver_port)
        self.alerts: list[Any] = []
        self.workers: list[Worker] = []
        self.crashes = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.tansu.bootstrap)

    def start(self) -> None:
        self.tansu.start(timeout_s=30.0)
        self.influx.start(timeout_s=60.0)
        self.create_topics()
        self.receiver.start()
        for i in range(2):
            worker = Worker(f"worker-{i}", self.worker_env(i), self.tmp / f"worker-{i}.log")
            worker.start()
            self.workers.append(worker)
        threading.Thread(target=self._supervise, daemon=True).start()
        log("stack up", kafka=self.tansu.bootstrap, influx=self.influx.url, tmp=self.tmp)

    def _supervise(self) -> None:
        """Restart a worker that exited on its own within a second (a crash, counted)."""
        while not self._stop.wait(1.0):
            with self._lock:
                for worker in self.workers:
                    if worker.supervised and not worker.alive():
                        self.crashes += 1
                        log("worker crashed: restarting", name=worker.name,
                            tail=worker.tail(4).replace("\n", " | ")[:600])
                        worker.start()

    def create_topics(self) -> None:
        asyncio.run(create_topics(self.kafka, topic_names(TOPICS), PARTITIONS))

    def worker_env(self, index: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROF_")}
        receiver = {"name": "chaos", "url": self.receiver.url, "secret_env": SECRET_ENV}
        env |= FAUST_ENV | {
            SECRET_ENV: SECRET,
            "PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS": self.tansu.bootstrap,
            "PROMPTPROF_INFLUX__URL": self.influx.url,
            "PROMPTPROF_INFLUX__API": "v1",
            "PROMPTPROF_INFLUX__DATABASE": self.influx.database,
            "PROMPTPROF_TOPICS__PARTITIONS": str(PARTITIONS),
            "PROMPTPROF_WINDOWS__WIDTHS_S": f"[{WIDTH_S}]",
            "PROMPTPROF_WINDOWS__ALLOWED_LATENESS_S": str(LATENESS_S),
            "PROMPTPROF_WINDOWS__LABEL_DIMENSIONS": '["user"]',
            "PROMPTPROF_WINDOWS__MAX_SERIES_PER_PROMPT": str(CAP),
            "PROMPTPROF_WORKER__APP_ID": "chaos-workers",
            "PROMPTPROF_WORKER__CHECKPOINT_INTERVAL_S": "1",
            "PROMPTPROF_WORKER__IDLE_TIMEOUT_S": "1",
            "PROMPTPROF_WORKER__DATA_DIR": str(self.tmp / f"worker-{index}"),
            "PROMPTPROF_ALERTS__RULES_FILE": str(DEMO_RULES),
            "PROMPTPROF_ALERTS__RECEIVERS": json.dumps([receiver]),
            "PROMPTPROF_ALERTS__ROUTES": json.dumps([{"receivers": ["chaos"]}]),
            "PROMPTPROF_LOG_LEVEL": "warning",
        }
        return env

    def receiver_down(self) -> None:
        self.alerts.extend(self.receiver.alerts())
        self.receiver.stop()

    def receiver_up(self) -> None:
        self.receiver = WebhookReceiver(SECRET, port=self.receiver_port).start()

    def all_alerts(self) -> list[Any]:
        return self.alerts + self.receiver.alerts()

    def close(self) -> None:
        self._stop.set()
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
        with contextlib.suppress(Exception):
            self.receiver.stop()
        for service in (self.influx, self.tansu):
            with contextlib.suppress(Exception):
                if service.is_running():
                    service.stop(timeout_s=10.0)
        if os.environ.get("CHAOS_KEEP") == "1":
            log("kept", tmp=self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- InfluxDB figures of a phase -------------------------------------------------------

    def figures(self, service: str) -> dict[str, int]:
        rows = self.influx.rows(
            "SELECT sum(events) AS events, sum(late_events) AS late FROM llm_window "
            f"WHERE service='{service}' AND width='{WIDTH_S}s'"
        )
        if not rows:
            return {"events": 0, "late": 0}
        return {"events": int(rows[0]["events"] or 0), "late": int(rows[0]["late"] or 0)}

    def crashed(self, since: int) -> int:
        """Worker crashes since the count was ``since``."""
        return self.crashes - since


class Traffic:
    """A :class:`TrafficGenerator` on its own profiler, in a thread with its own loop."""

    def __init__(self, stack: Stack, phase: str, rate: float = RATE, **producer: Any) -> None:
        settings: Settings = load_settings(
            kafka={"bootstrap_servers": stack.tansu.bootstrap},
            topics=TOPICS.model_dump(),
            producer={"service_name": f"chaos-{phase}", "linger_ms": 50,
                      "metrics_log_interval_s": 0, **producer},
        )
        self.service = f"chaos-{phase}"
        self.profiler = Profiler(settings)
        self.rate = rate
        self.thread: threading.Thread | None = None
        self.injection: Injection | None = None

    def run(self, duration_s: float) -> None:
        generator = TrafficGenerator(self.profiler, rate=self.rate, injection=self.injection,
                                     time_scale=0.1)
        asyncio.run(generator.run(duration_s))

    def start(self, duration_s: float) -> Traffic:
        self.thread = threading.Thread(target=self.run, args=(duration_s,), daemon=True)
        self.thread.start()
        return self

    def finish(self, timeout_s: float = 60.0) -> dict[str, Any]:
        if self.thread is not None:
            self.thread.join()
        self.profiler.flush(timeout_s)
        stats = self.profiler.stats()
        self.profiler.close(timeout=5)
        return stats


def settle(
    stack: Stack, service: str, target: int, since: float, timeout_s: float = 90.0,
    quiet_s: float = 12.0,
) -> tuple[dict[str, int], float | None]:
    """Poll the phase's figures until events + late reach ``target`` (returns the seconds from
    ``since``) or stop changing for ``quiet_s`` (recovery None)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] = {"events": -1, "late": -1}
    changed = time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            got = stack.figures(service)
            if got["events"] + got["late"] >= target:
                return got, round(time.monotonic() - since, 1)
            if got != last:
                last, changed = got, time.monotonic()
            elif time.monotonic() - changed > quiet_s:
                return got, None
        time.sleep(0.5)
    return last, None


def account(result: Result, stats: dict[str, Any], got: dict[str, int]) -> None:
    result.sent = int(stats["sent_events"])
    result.producer_dropped = int(stats["dropped"])
    result.notes["recorded"] = int(stats["recorded"])
    result.counted = got["events"]
    result.late_dropped = got["late"]
    surplus = got["events"] + got["late"] - result.sent
    result.duplicated = max(0, surplus)
    result.lost = max(0, -surplus)


def steady_phase(
    stack: Stack, name: str, duration_s: float, fault: Callable[[], float],
    fault_at_s: float, bound_s: float, rate: float = RATE, injection: Injection | None = None,
) -> Result:
    """Traffic for ``duration_s``; ``fault()`` at ``fault_at_s`` returns when the fault ended."""
    result = Result(name, recovery_bound_s=bound_s)
    crashes = stack.crashes
    traffic = Traffic(stack, name, rate)
    traffic.injection = injection
    traffic.start(duration_s)
    time.sleep(fault_at_s)
    log(f"{name}: fault")
    fault_end = fault()
    log(f"{name}: fault over")
    stats = traffic.finish()
    traffic_end = time.monotonic()
    got, recovery = settle(stack, traffic.service, int(stats["sent_events"]), fault_end)
    account(result, stats, got)
    result.recovery_s = recovery
    if recovery is not None:  # the lag left once the producer stopped (window + lateness)
        result.notes["caught_up_after_traffic_s"] = round(
            max(0.0, recovery - (traffic_end - fault_end)), 1
        )
    result.workers_crashed = stack.crashed(crashes)
    result.ok = (
        result.lost == 0 and result.workers_crashed == 0 and recovery is not None
        and recovery <= bound_s
    )
    log(f"{name}: done", **{k: v for k, v in result.__dict__.items() if k != "notes"})
    return result


# -- the faults ------------------------------------------------------------------------------


def broker_restart(stack: Stack) -> Result:
    """Tansu restarts (memory storage: topics, offsets and changelogs are lost). The producer's
    unacked events are delivered after; events acked but not yet consumed are lost with it."""
    result = Result("broker_restart", recovery_bound_s=60.0)
    crashes = stack.crashes
    traffic = Traffic(stack, "broker_restart").start(30.0)
    time.sleep(12.0)
    before = traffic.profiler.stats()["sent_events"]
    counted_before = stack.figures(traffic.service)
    stack.tansu.restart(timeout_s=30.0)
    stack.create_topics()
    restarted = time.monotonic()
    log("broker_restart: broker back", acked_before=before, counted_before=counted_before)
    stats = traffic.finish(timeout_s=90.0)
    got, recovery = settle(stack, traffic.service, int(stats["sent_events"]), restarted,
                           timeout_s=90.0, quiet_s=30.0)
    account(result, stats, got)
    result.recovery_s = recovery
    # events acked before the restart that no window holds yet: the documented loss window
    result.notes |= {"acked_before_restart": before,
                     "counted_when_restarted": counted_before["events"],
                     "loss_window_events": result.lost}
    resumed = stack.figures(traffic.service)["events"] > counted_before["events"]
    result.notes["counting_resumed"] = resumed
    result.workers_crashed = stack.crashed(crashes)
    result.ok = resumed and result.workers_crashed == 0 and result.duplicated == 0
    log("broker_restart: done", **{k: v for k, v in result.__dict__.items()})
    return result


def worker_kill(stack: Stack) -> Result:
    def fault() -> float:
        worker = stack.workers[1]
        with stack._lock:
            worker.supervised = False
        worker.kill()
        time.sleep(2.0)
        worker.start()
        worker.supervised = True
        return time.monotonic()

    result = steady_phase(stack, "worker_sigkill", 35.0, fault, 12.0, bound_s=45.0)
    # a SIGKILL re-counts at most ~2 checkpoint intervals of traffic (documented)
    result.notes["duplicate_bound"] = int(3 * RATE)
    result.ok = result.ok and result.duplicated <= 3 * RATE
    return result


def influx_down(stack: Stack, down_s: float) -> Result:
    def fault() -> float:
        stack.influx.stop(timeout_s=20.0)
        time.sleep(down_s)
        stack.influx.start(timeout_s=60.0)
        return time.monotonic()

    return steady_phase(stack, "influx_down", down_s + 20.0, fault, 8.0, bound_s=45.0)


def receiver_down(stack: Stack) -> Result:
    def fault() -> float:
        stack.receiver_down()
        time.sleep(25.0)
        stack.receiver_up()
        return time.monotonic()

    # a latency regression of sql-gen once the baseline has warmed up: alerts fire while the
    # receiver is down, and must arrive once after it is back
    regression = Injection("sql-gen", after_s=25.0, latency_factor=3.0)
    return steady_phase(stack, "receiver_down", 65.0, fault, 22.0, bound_s=30.0,
                        injection=regression)


def burst(stack: Stack) -> Result:
    def fault() -> float:
        spike = Traffic(stack, "burst_10x", 9 * RATE).start(10.0)
        spike_stats = spike.finish()
        result_holder.append(spike_stats)
        return time.monotonic()

    result_holder: list[dict[str, Any]] = []
    result = steady_phase(stack, "burst_base", 25.0, fault, 5.0, bound_s=30.0)
    spike_stats = result_holder[0]
    got, _ = settle(stack, "chaos-burst_10x", int(spike_stats["sent_events"]),
                    time.monotonic(), timeout_s=60.0)
    spike = Result("burst_10x")
    account(spike, spike_stats, got)
    result.sent += spike.sent
    result.counted += spike.counted
    result.late_dropped += spike.late_dropped
    result.producer_dropped += spike.producer_dropped
    result.duplicated += spike.duplicated
    result.lost += spike.lost
    result.name = "burst_10x"
    result.notes["burst_sent"] = spike.sent
    result.ok = result.ok and spike.lost == 0 and spike.duplicated == 0
    return result


async def _flood(bootstrap: str, garbage: int, envelopes: int, per: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(TOPICS.calls, b"\x00garbage %d" % i)
                   for i in range(garbage)]
        bad = encode_envelope([{"junk": j} for j in range(per)])
        futures += [await producer.send(TOPICS.calls, bad) for _ in range(envelopes)]
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _count_topic(bootstrap: str, topic: str) -> int:
    """The records in ``topic``, read from its start: Tansu 0.6's ListOffsets answers an end
    offset below the log's last batch, so end minus start offsets undercounts."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=16 * 1_048_576)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        while not await _read_to_end(consumer, tps):
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            count += sum(len(records) for records in batches.values())
        return count
    finally:
        await consumer.stop()


async def _read_to_end(consumer: Any, tps: list[Any]) -> bool:
    """Whether every partition was read up to the high watermark of its last fetch."""
    for tp in tps:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True


def malformed(stack: Stack) -> Result:
    garbage, envelopes, per = 20_000, 200, 100
    before = asyncio.run(_count_topic(stack.tansu.bootstrap, TOPICS.dead_letter))

    def fault() -> float:
        asyncio.run(_flood(stack.tansu.bootstrap, garbage, envelopes, per))
        return time.monotonic()

    result = steady_phase(stack, "malformed_flood", 25.0, fault, 5.0, bound_s=30.0)
    dead, deadline = -1, time.monotonic() + 20.0
    while time.monotonic() < deadline:  # until the dead-letter count stops changing
        time.sleep(2.0)
        now = asyncio.run(_count_topic(stack.tansu.bootstrap, TOPICS.dead_letter)) - before
        if now == dead:
            break
        dead = now
    expected = garbage + envelopes * per
    result.notes |= {"bad_sent": expected, "dead_letters": dead}
    result.ok = result.ok and dead == expected
    return result


def cardinality(stack: Stack, distinct: int) -> Result:
    result = Result("label_cardinality", recovery_bound_s=60.0)
    crashes = stack.crashes
    settings: Settings = load_settings(
        kafka={"bootstrap_servers": stack.tansu.bootstrap}, topics=TOPICS.model_dump(),
        producer={"service_name": "chaos-cardinality", "linger_ms": 20,
                  "metrics_log_interval_s": 0, "buffer_size": 2_000_000},
    )
    profiler = Profiler(settings)
    spec = make_spec("cardinal", "v1", model="gpt-4o-mini", provider="openai")
    started = time.monotonic()
    per_second = max(1, distinct // 20)  # spread over about 20 seconds
    for i in range(distinct):
        call = profiler.start_call(spec)
        if call is None:
            continue
        call.end_ns = call.start_ns + 30_000_000
        call.label("user", f"user-{i}")
        profiler.enqueue(call)
        if i % per_second == per_second - 1:
            pause = started + (i + 1) / per_second - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    profiler.flush(120)
    stats = profiler.stats()
    profiler.close(timeout=5)
    sent_end = time.monotonic()
    got, recovery = settle(stack, "chaos-cardinality", int(stats["sent_events"]), sent_end,
                           timeout_s=120.0)
    account(result, stats, got)
    result.recovery_s = recovery
    where = f"service='chaos-cardinality' AND width='{WIDTH_S}s'"
    rows = stack.influx.rows(f'SELECT events, "user" FROM llm_window WHERE {where}')
    per_window: dict[int, int] = {}
    for row in rows:
        per_window[row["time"]] = per_window.get(row["time"], 0) + 1
    overflow = sum(r["events"] for r in rows if r["user"] == "__overflow__")
    series = stack.influx.rows("SHOW SERIES FROM llm_window WHERE service='chaos-cardinality'")
    result.notes |= {
        "distinct_values": distinct, "cap": CAP, "windows": len(per_window),
        "max_series_per_window": max(per_window.values(), default=0),
        "overflow_events": overflow, "influx_series": len(series),
    }
    result.workers_crashed = stack.crashed(crashes)
    result.ok = (
        result.lost == 0 and result.duplicated == 0 and result.workers_crashed == 0
        and max(per_window.values(), default=0) <= CAP + 1
        and len(series) <= (CAP + 1) * max(1, len(per_window))
    )
    log("cardinality: done", **result.__dict__)
    return result


def clock_skew(stack: Stack) -> Result:
    """Producers whose clocks are off: an hour behind (late for every width: dropped, counted
    in late_events), 10 s ahead (counted once their time comes), a day ahead (beyond
    windows.max_future_s: dead letters with the reason, counted as dropped)."""
    result = Result("clock_skew", recovery_bound_s=40.0)
    crashes = stack.crashes
    settings: Settings = load_settings(
        kafka={"bootstrap_servers": stack.tansu.bootstrap}, topics=TOPICS.model_dump(),
        producer={"service_name": "chaos-skew", "linger_ms": 20, "metrics_log_interval_s": 0},
    )
    profiler = Profiler(settings)
    skews = {"past": -3600.0, "future": 10.0, "far-future": 86_400.0}
    per = 2000
    for prompt, skew in skews.items():
        spec = make_spec(f"skew-{prompt}", "v1", model="gpt-4o-mini", provider="openai")
        for _ in range(per):
            call = profiler.start_call(spec)
            if call is None:
                continue
            call.start_ns += round(skew * NS)
            call.end_ns = call.start_ns + 30_000_000
            profiler.enqueue(call)
    profiler.flush(30)
    stats = profiler.stats()
    profiler.close(timeout=5)
    sent_end = time.monotonic()
    # the +10 s calls are written once their window's end plus the lateness has passed
    got, recovery = settle(stack, "chaos-skew", int(stats["sent_events"]) - per, sent_end,
                           timeout_s=60.0, quiet_s=30.0)
    account(result, stats, got)
    result.dead_lettered = per  # the far-future ones
    result.lost = max(0, result.lost - per)
    result.recovery_s = recovery
    far = stack.influx.rows("SELECT events FROM llm_window WHERE prompt_id='skew-far-future'")
    result.notes |= {"late_past": got["late"], "far_future_written": len(far)}
    result.workers_crashed = stack.crashed(crashes)
    result.ok = (result.lost == 0 and result.late_dropped == per and result.workers_crashed == 0
                 and not far)
    log("clock_skew: done", **result.__dict__)
    return result


def alerts_phase(stack: Stack) -> Result:
    """Not a fault: the alert stream of the whole run, each alert delivered once."""
    alerts = stack.all_alerts()
    ids = [a.get("alert_id") for a in alerts if isinstance(a, dict)]
    result = Result("alerts_delivered_once")
    result.notes |= {"received": len(ids), "distinct": len(set(ids))}
    result.duplicated = len(ids) - len(set(ids))
    result.ok = result.duplicated == 0
    return result


@contextlib.contextmanager
def running_stack() -> Iterator[Stack]:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    stack = Stack()
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def wait_for_group(stack: Stack) -> float:
    """Traffic until both workers write windows; the seconds it took."""
    started = time.monotonic()
    traffic = Traffic(stack, "warmup").start(10.0)
    stats = traffic.finish()
    settle(stack, traffic.service, int(stats["sent_events"]), started, timeout_s=90.0)
    return round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k label values, 20 s outage")
    parser.add_argument("--only", nargs="*", default=None, help="run only these phases")
    args = parser.parse_args(argv)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # the stack's and producer's logs: stdout carries the summary only
    distinct = 200_000 if args.quick else 1_000_000
    influx_down_s = 20.0 if args.quick else 60.0
    started = time.monotonic()
    results: list[Result] = []
    with running_stack() as stack:
        warmup_s = wait_for_group(stack)
        log("workers up", s=warmup_s)
        baseline = steady_phase(stack, "baseline", 15.0, time.monotonic, 0.0, bound_s=30.0)
        results.append(baseline)
        # the broker restart last: Tansu loses every topic, and what follows it in the
        # workers (see broker_restart) would blur the figures of the other faults
        phases: list[tuple[str, Callable[[Stack], Result]]] = [
            ("worker_sigkill", worker_kill),
            ("influx_down", lambda s: influx_down(s, influx_down_s)),
            ("receiver_down", receiver_down), ("burst_10x", burst),
            ("malformed_flood", malformed),
            ("label_cardinality", lambda s: cardinality(s, distinct)),
            ("clock_skew", clock_skew), ("alerts_delivered_once", alerts_phase),
            ("broker_restart", broker_restart),
        ]
        for name, run in phases:
            if args.only is not None and name not in args.only:
                continue
            try:
                results.append(run(stack))
            except Exception as exc:  # a fault the stack did not survive: report, go on
                log("phase failed", phase=name, error=repr(exc))
                results.append(Result(name, notes={"error": repr(exc)}))
    by_phase = {r.name: {k: v for k, v in r.__dict__.items() if k != "name"} for r in results}
    summary = {
        "load_held": all(r.lost == 0 for r in results if r.name != "broker_restart"),
        "faults_survived": sum(r.ok for r in results),
        "faults": len(results),
        "failed": [r.name for r in results if not r.ok],
        "events_sent": sum(r.sent for r in results),
        "events_counted": sum(r.counted for r in results),
        "events_dropped": {
            "late": sum(r.late_dropped for r in results),
            "producer": sum(r.producer_dropped for r in results),
            "lost_with_broker": sum(r.lost for r in results if r.name == "broker_restart"),
            "lost_other": sum(r.lost for r in results if r.name != "broker_restart"),
            "dead_lettered_far_future": sum(r.dead_lettered for r in results),
        },
        "events_duplicated": sum(r.duplicated for r in results),
        "worker_crashes": sum(r.workers_crashed for r in results),
        "duration_s": round(time.monotonic() - started, 1),
        "phases": by_phase,
    }
    print(json.dumps(summary, default=str), file=real_stdout, flush=True)
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
