"""Helpers of the pipeline benchmarks: a private local stack, the real worker, realistic events.

- :class:`BenchStack`: Tansu and influxd on free loopback ports in a temporary folder, the
  promptprof topics created, and ``promptprof worker`` subprocesses (the real CLI, configured by
  ``PROMPTPROF_*`` variables); everything is stopped on exit, on error and on SIGTERM.
- :class:`EventFactory`: call-event dicts exactly as the producer's sender builds them (through
  :class:`promptprof._record.EventBuilder` from filled-in :class:`promptprof._record.Call` objects),
  drawn from the simulated provider for a mix of prompts, versions and models, at event times
  chosen by the caller.
- :func:`full_envelopes` / :func:`produce`: batch envelopes of one series each (at most 500
  events, in event-time order) and their publication with aiokafka (lz4, as the sender).
- :func:`sender_records`: records exactly as the real sender packs them (its ``Linger`` and
  ``Packer``) for many producers on a simulated clock.
- :class:`WindowWatcher`: consumes the windows topic and tells when each closed window arrived.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ctypes
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from promptprof import Call, KafkaSettings, load_settings
from promptprof._envelope import encode_envelope
from promptprof._event import series_key
from promptprof._profiler import make_spec
from promptprof._record import EventBuilder, PromptSpec
from promptprof._sender import Linger, producer_options
from promptprof.export import Cycle
from promptprof.export._packing import Packer
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_tools.simulate import ModelProfile, SimulatedError, SimulatedProvider
from promptprof_tools.stack.influxdb import InfluxDB
from promptprof_tools.stack.ports import free_port
from promptprof_tools.stack.tansu import TansuBroker
from promptprof_tools.stack.topics import create_topics, topic_names

NS = 1_000_000_000
TOPICS = ProcessorTopicSettings()
PARTITIONS = 4
SERVICE = "bench-service"
# Faust reads these itself (no prefix). Tansu completes a group join after about half the
# rebalance timeout (30 s with Faust's default of 60 s): shortened so start-up stays short.
FAUST_ENV = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_REBALANCE_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks stop the stack."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


class WorkerProcess:
    """One ``promptprof worker`` child process, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        binary = Path(sys.executable).parent / "promptprof"
        argv = [str(binary)] if binary.exists() else [sys.executable, "-m", "promptprof_tools.cli"]
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [*argv, "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        """Whether the worker still runs."""
        return self.popen.poll() is None

    def check(self) -> None:
        """Raise (with the log's tail) when the worker has exited."""
        if not self.alive():
            raise RuntimeError(f"worker exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The last lines of the worker's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _common.log("worker did not stop in time: killing it", pid=self.pid)
                self.popen.kill()
                self.popen.wait()
        self._log.close()


class BenchStack:
    """Tansu + influxd on free loopback ports, topics created; workers started on demand."""

    def __init__(self, partitions: int = PARTITIONS, keep: bool = False) -> None:
        self.partitions = partitions
        self.keep = keep or os.environ.get("BENCH_KEEP") == "1"
        self.tmp = Path(tempfile.mkdtemp(prefix="promptprof-bench-"))
        self.tansu = TansuBroker(free_port(), self.tmp / "tansu")
        self.influx = InfluxDB(free_port(), free_port(), self.tmp / "influx")
        self.workers: list[WorkerProcess] = []

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap address."""
        return self.tansu.bootstrap

    @property
    def kafka(self) -> KafkaSettings:
        """Kafka settings for our broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    def __enter__(self) -> BenchStack:
        _raise_on_sigterm()
        try:
            (self.tmp / "tansu").mkdir()
            self.tansu.start(timeout_s=30.0)
            self.influx.start(timeout_s=60.0)
            asyncio.run(create_topics(self.kafka, topic_names(TOPICS), self.partitions))
        except BaseException:
            self.close()
            raise
        _common.log(
            "stack up",
            kafka=self.bootstrap,
            influx=self.influx.url,
            tmp=self.tmp,
            tansu_pid=self.tansu.pid,
            influxd_pid=self.influx.pid,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers, influxd and Tansu; remove the temporary folder."""
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
        for service in (self.influx, self.tansu):
            with contextlib.suppress(Exception):
                if service.is_running():
                    service.stop(timeout_s=10.0)
        if self.keep:
            _common.log("kept", tmp=self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def worker_env(self, **settings: Any) -> dict[str, str]:
        """The environment of a worker on this stack; ``settings`` as ``section__key=value``.

        For example ``windows__widths_s=[10, 60]`` sets ``PROMPTPROF_WINDOWS__WIDTHS_S``.
        Lists are passed as JSON.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROF_")}
        name = f"bench-worker-{len(self.workers)}"
        env |= {
            "PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "PROMPTPROF_INFLUX__URL": self.influx.url,
            "PROMPTPROF_INFLUX__DATABASE": self.influx.database,
            "PROMPTPROF_TOPICS__CALLS": TOPICS.calls,
            "PROMPTPROF_TOPICS__WINDOWS": TOPICS.windows,
            "PROMPTPROF_TOPICS__DEAD_LETTER": TOPICS.dead_letter,
            "PROMPTPROF_TOPICS__PARTITIONS": str(self.partitions),
            "PROMPTPROF_WORKER__APP_ID": name,
            "PROMPTPROF_WORKER__DATA_DIR": str(self.tmp / name),
            "PROMPTPROF_LOG_FORMAT": "console",
            "PROMPTPROF_LOG_LEVEL": "warning",
            **FAUST_ENV,
        }
        for key, value in settings.items():
            text = orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)
            env[f"PROMPTPROF_{key.upper()}"] = text
        return env

    def start_worker(self, env: dict[str, str]) -> WorkerProcess:
        """Start ``promptprof worker`` with ``env``."""
        name = env["PROMPTPROF_WORKER__APP_ID"]
        worker = WorkerProcess(env, self.tmp / f"{name}.log")
        self.workers.append(worker)
        _common.log("worker started", pid=worker.pid, app_id=name)
        return worker

    def influx_rows(self, q: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query against the bench database."""
        return self.influx.rows(q)


# -- realistic events ---------------------------------------------------------------------------

MODELS = (
    ModelProfile("gpt-4o-mini", latency_median_ms=700),
    ModelProfile(
        "gpt-4o", latency_median_ms=1400, output_tokens_mean=90, quality_mean=0.7, error_rate=0.03
    ),
    ModelProfile(
        "claude-3-5-haiku-latest",
        provider="anthropic",
        latency_median_ms=900,
        input_tokens_mean=1800,
        output_tokens_mean=220,
        error_rate=0.02,
    ),
    ModelProfile(
        "claude-sonnet-4-0",
        provider="anthropic",
        latency_median_ms=1800,
        input_tokens_mean=2500,
        output_tokens_mean=400,
        error_rate=0.01,
    ),
)
PROMPTS = (
    "support-answer",
    "summarize",
    "sql-gen",
    "classify",
    "extract-entities",
    "translate",
    "rerank",
    "draft-email",
    "title",
    "moderate",
)


@dataclass(frozen=True)
class SeriesSpec:
    """One (prompt, version, model) with its traffic weight."""

    spec: PromptSpec
    model: ModelProfile
    weight: float


def series_mix(count: int = 20, seed: int = 3) -> list[SeriesSpec]:
    """``count`` series: prompts x versions x models with skewed (Zipf-like) traffic shares."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        prompt = PROMPTS[i % len(PROMPTS)]
        version = f"v{1 + i // len(PROMPTS)}"
        model = MODELS[(i * 7 + i // len(PROMPTS)) % len(MODELS)]
        spec = make_spec(prompt, version, model.model, model.provider, "chat", {"team": "core"})
        out.append(SeriesSpec(spec, model, 1.0 / (1 + i) ** 0.8 * rng.uniform(0.8, 1.2)))
    return out


class EventFactory:
    """Builds call-event dicts as the producer's sender does, with simulated figures."""

    def __init__(self, series: Sequence[SeriesSpec], seed: int = 11) -> None:
        self.series = list(series)
        self.weights = [s.weight for s in self.series]
        self.rng = random.Random(seed)
        self.provider = SimulatedProvider(seed + 1, time_scale=0.0)
        self.builder = EventBuilder(SERVICE, "bench", False, None)
        self.builder.clock_offset_ns = 0  # Call times below are Unix nanoseconds already

    def pick(self, count: int) -> list[SeriesSpec]:
        """``count`` series drawn by traffic weight."""
        return self.rng.choices(self.series, self.weights, k=count)

    def event(self, series: SeriesSpec, start_ns: int) -> dict[str, Any]:
        """One call event of ``series`` that started at ``start_ns`` (Unix ns)."""
        call = Call(None, series.spec, 1.0)
        call.start_ns = start_ns
        try:
            done = self.provider.draw(series.model)
        except SimulatedError as exc:
            call.set_error(exc)
            call.end_ns = start_ns + int(series.model.latency_median_ms * 0.2e6)
            return self.builder.build(call)
        call.first_token_ns = start_ns + int(done.ttft_ms * 1e6)
        call.set_usage(done.input_tokens, done.output_tokens)
        call.set_model(done.model)
        call.score(round(done.quality, 4), "simulated")
        call.end_ns = start_ns + int(done.latency_ms * 1e6)
        return self.builder.build(call)

    def events(self, times_ns: Sequence[int]) -> list[dict[str, Any]]:
        """One event per start time, series drawn by weight."""
        return [self.event(s, t) for s, t in zip(self.pick(len(times_ns)), times_ns, strict=True)]

    def pooled(self, times_ns: Iterable[int], pool: int) -> Iterator[tuple[dict[str, Any], bytes]]:
        """(event, series key) per start time: the first ``pool`` events are drawn (about 17 µs
        each); the rest copy them in turn with their own start time and event id (a dict copy),
        so that millions of events are prepared in seconds. Figures repeat every ``pool`` events.
        """
        drawn: list[tuple[dict[str, Any], bytes]] = []
        prefix = f"{self.rng.getrandbits(48):012x}"
        for i, t in enumerate(times_ns):
            if i < pool:
                event = self.event(self.pick(1)[0], t)
                drawn.append((event, series_key(event)))
                yield drawn[-1]
            else:
                base, key = drawn[i % pool]
                event = base.copy()
                event["start_time_unix_nano"] = t
                event["event_id"] = f"{prefix}{i:x}"
                yield event, key


def poisson_times(rng: random.Random, start_ns: int, rate: float, count: int) -> list[int]:
    """``count`` arrival times of a Poisson process of ``rate`` per second from ``start_ns``."""
    times, t = [], float(start_ns)
    for _ in range(count):
        t += rng.expovariate(rate) * NS
        times.append(int(t))
    return times


@dataclass(frozen=True)
class Record:
    """One Kafka record to produce."""

    key: bytes
    value: bytes
    events: int
    partition: int | None = None


def full_envelopes(
    pairs: Iterable[tuple[dict[str, Any], bytes]], batch_max: int = 500, max_age_s: float = 2.0
) -> list[Record]:
    """Envelopes of ``batch_max`` events of one series from (event, series key) pairs in
    event-time order, emitted when full, or earlier when a series' pending events span
    ``max_age_s`` of event time (as the sender's linger would send a slow series' events before
    they turn late)."""
    max_age = int(max_age_s * NS)
    pending: dict[bytes, list[dict[str, Any]]] = {}
    out = []
    for event, key in pairs:
        group = pending.setdefault(key, [])
        if group and event["start_time_unix_nano"] - group[0]["start_time_unix_nano"] > max_age:
            out.append(Record(key, encode_envelope(group), len(group)))
            group = pending[key] = []
        group.append(event)
        if len(group) == batch_max:
            out.append(Record(key, encode_envelope(group), batch_max))
            pending[key] = []
    out.extend(Record(k, encode_envelope(g), len(g)) for k, g in pending.items() if g)
    return out


def sender_records(
    start_ns: int, events: int, producers: int = 20, rate: float = 500.0, series: int = 2_000,
    partitions: int = PARTITIONS, seed: int = 17,
) -> list[Record]:
    """Records as the real sender builds them for ``producers`` services taking ``rate`` calls/s
    each (Poisson arrivals from ``start_ns``), default producer settings (linger 50 ms, 500
    events per record), calls spread over ``series`` series with skewed shares: on a simulated
    clock, each producer's :class:`promptprof._sender.Linger` says when a cycle takes its buffer
    and its :class:`promptprof.export._packing.Packer` packs the cycle into one envelope per
    partition. ``events`` calls in all; the records of all producers in the order sent."""
    defaults = load_settings().producer
    rng = random.Random(seed)
    counts = [events // producers + (p < events % producers) for p in range(producers)]
    arrivals = [poisson_times(rng, start_ns, rate, count) for count in counts]
    drawn = EventFactory(series_mix(series), seed).pooled(itertools.chain(*arrivals), 20_000)
    sent: list[tuple[int, int, Record]] = []
    for producer, times in enumerate(arrivals):
        pairs = list(itertools.islice(drawn, len(times)))
        phase = rng.uniform(0, defaults.linger_ms / 1000)
        packer = Packer(defaults.batch_max_events, _refuse_drop)
        linger = Linger(defaults.linger_ms / 1000, defaults.batch_max_events)
        for taken_ns, cycle in _cycles(times, pairs, phase, linger):
            taken = Cycle([k for _, k in cycle], [e for e, _ in cycle])
            for envelope in packer.pack(taken, partitions):
                record = Record(b"", envelope.value, envelope.events, envelope.partition)
                sent.append((taken_ns, producer, record))
    sent.sort(key=lambda item: item[:2])
    return [record for _, _, record in sent]


def _cycles(
    times: Sequence[int], pairs: Sequence[tuple[dict[str, Any], bytes]], phase_s: float,
    linger: Linger,
) -> Iterator[tuple[int, Sequence[tuple[dict[str, Any], bytes]]]]:
    """(simulated time, calls taken) of each cycle of one producer's sender, whose clock starts
    ``phase_s`` after ``times[0]``: a cycle takes what has arrived when its ``linger`` says it is
    due (a linger after the last, or as soon as ``batch_max`` calls wait)."""
    batch_max = linger.batch_max
    now = times[0] / NS + phase_s if times else 0.0
    linger.taken(now)
    taken = 0
    while taken < len(times):
        arrived = bisect.bisect_right(times, int(now * NS))
        wait = linger.remaining(now, arrived - taken)
        if wait > 0:  # wake at the due time, or when the batch_max-th call arrives before it
            full = taken + batch_max - 1
            now = min(now + wait, times[full] / NS) if full < len(times) else now + wait
            continue
        linger.taken(now)
        if arrived > taken:
            yield int(now * NS), pairs[taken:arrived]
            taken = arrived


def _refuse_drop(reason: str) -> None:
    raise AssertionError(f"the packer dropped a bench event: {reason}")


def with_keys(events: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(event, series key) pairs."""
    return ((e, series_key(e)) for e in events)


def marker_records(prompt_id: str, start_ns: int, partitions: int) -> list[Record]:
    """One single-event envelope per partition of a marker series (prompt ``prompt_id``)."""
    factory = EventFactory(series_mix(1))
    spec = make_spec(prompt_id, "1", "gpt-4o-mini", "openai", "chat", {})
    marker = SeriesSpec(spec, MODELS[0], 1.0)
    out = []
    for p in range(partitions):
        event = factory.event(marker, start_ns + p)
        out.append(Record(series_key(event), encode_envelope([event]), 1, partition=p))
    return out


async def produce(bootstrap: str, topic: str, records: Sequence[Record]) -> float:
    """Publish ``records`` (lz4, acks=1, as the sender); return the seconds it took."""
    settings = load_settings(kafka={"bootstrap_servers": bootstrap})
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = []
        for i, r in enumerate(records):
            futures.append(await producer.send(topic, r.value, key=r.key, partition=r.partition))
            if i % 200 == 199:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


# -- reading closed windows -----------------------------------------------------------------------


@dataclass
class WindowWatcher:
    """Consumes the windows topic from the start; keeps (arrival time, window dict) pairs."""

    bootstrap: str
    topic: str = TOPICS.windows
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None

    async def start(self, partitions: int = PARTITIONS) -> None:
        """Assign every partition of the windows topic from offset 0 (no group)."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)

    async def poll(self, timeout_ms: int = 50) -> list[dict[str, Any]]:
        """New windows (appended to :attr:`seen` with their arrival time)."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        now = time.monotonic()
        new = []
        for records in batches.values():
            for r in records:
                window = orjson.loads(r.value)
                self.seen.append((now, window))
                self.raw.append(r.value)
                new.append(window)
        return new

    async def stop(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Log a stage's start and duration."""
    t0 = time.monotonic()
    _common.log(f"{name} ...")
    yield
    _common.log(f"{name} done", s=round(time.monotonic() - t0, 2))


def influx_wait(stack: BenchStack, q: str, ok: Any, timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll an InfluxQL query until ``ok(rows)`` holds; return the rows (or the last ones)."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            rows = stack.influx_rows(q)
            if ok(rows):
                return rows
        time.sleep(every_s)
    return rows
