"""Fixtures for the stream processor against the real broker and the real InfluxDB.

A :class:`Pipeline` is one isolated deployment on the session servers: fresh topics (4
partitions), a fresh Faust app id (its consumer group), a fresh InfluxDB database and short
windows. ``pipeline.start_worker()`` runs ``promptprof worker`` as a real subprocess configured
only through ``PROMPTPROF_*`` environment variables; every worker is stopped (SIGTERM, then
SIGKILL) when the test ends, pass or fail, and dies with the test process if that is killed.
Their output is printed when the test ends, after they stopped: pytest shows a test's captured
output only when it failed, so every failure report carries the workers' logs.

Calls go in through the real producer (:class:`promptprof._profiler.Profiler`): :class:`Traffic`
enqueues calls whose start time is "now" and whose latency is chosen, paced in real time like a
service's traffic, and remembers what it sent (series, event time, latency, error type) so that
tests can compute the exact figures of every window.

Faust's group timings are shortened through Faust's own environment variables
(``BROKER_SESSION_TIMEOUT`` etc., see :data:`FAUST_ENV`): Tansu holds a group join for about half
the rebalance timeout (30 s with Faust's default of 60 s), and a member that died without
leaving is expelled only after the session timeout.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from promptprof import KafkaSettings, Profiler, load_settings
from promptprof._profiler import make_spec
from promptprof._record import PromptSpec
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_tools.stack import InfluxDB, StackError, TansuBroker, create_topics, run_sync

WORKER_COMMAND = [str(Path(sys.executable).with_name("promptprof")), "worker"]
# Run the worker through a tiny exec wrapper that first asks the kernel to SIGKILL it when the
# test process dies (prctl PR_SET_PDEATHSIG survives exec), so no worker outlives a killed
# pytest. A wrapper, not preexec_fn: the test process has threads, and preexec_fn may deadlock.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() == int(sys.argv[1]):\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
)
PARTITIONS = 4
SERVICE = "itest"
MODEL = "m-test"
# Faust reads these itself (no prefix). Tansu completes a join after about half the rebalance
# timeout; a member killed without leaving is expelled after the session timeout.
FAUST_ENV = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_REBALANCE_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}
# Keep event times this far from whole seconds (every window boundary is one), so that the
# test's copy of the producer's clock offset puts each call in the same window as the worker.
BOUNDARY_GUARD_NS = 5_000_000
NS = 1_000_000_000
# Lines of each worker's output shown with a failed test (its whole log, unless a runaway one).
FAILURE_LOG_LINES = 5000


class WorkerProcess:
    """One ``promptprof worker`` subprocess; output goes to ``log_path``."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Spawn (or respawn) the worker; call from the main thread, with whose end it dies."""
        assert not self.alive(), "already running"
        command = WORKER_COMMAND
        if sys.platform == "linux":
            command = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
        with self.log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                command, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int | None:
        """The pid of the current process, if one was started."""
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout_s: float = 20.0) -> float:
        """SIGTERM and wait; return the seconds it took. Raises if it had to be killed."""
        if not self.alive():
            return 0.0
        assert self.popen is not None
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker {self.name} ignored SIGTERM for {timeout_s} s (killed):\n"
                + self.log_tail()
            ) from None
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap it."""
        if self.alive():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the worker's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.log_path}:\n" + "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class Sent:
    """One call handed to the producer."""

    prompt_id: str
    time_ns: int
    latency_ms: float
    error_type: str | None


class Traffic:
    """Calls through a real :class:`Profiler`, with start time now and a chosen latency: each
    is a :class:`promptprof._record.Call` from ``start_call``, given its end and error, then
    enqueued, as a client wrapper does."""

    def __init__(self, profiler: Profiler) -> None:
        self.profiler = profiler
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._specs: dict[str, PromptSpec] = {}
        # the producer's EventBuilder computes the same offset when its sender starts
        self._offset_ns = time.time_ns() - time.perf_counter_ns()

    def _spec(self, prompt_id: str) -> PromptSpec:
        spec = self._specs.get(prompt_id)
        if spec is None:
            spec = self._specs[prompt_id] = make_spec(prompt_id, "v1", model=MODEL)
        return spec

    def burst(self, calls: Sequence[tuple[str, float, str | None]]) -> None:
        """Enqueue ``(prompt_id, latency_ms, error_type)`` calls now, away from a boundary."""
        while not BOUNDARY_GUARD_NS < time.time_ns() % NS < NS - 2 * BOUNDARY_GUARD_NS:
            time.sleep(0.002)
        records = []
        for prompt_id, latency_ms, error_type in calls:
            call = self.profiler.start_call(self._spec(prompt_id))  # starts now
            assert call is not None
            call.end_ns = call.start_ns + round(latency_ms * 1_000_000)
            if error_type is not None:
                call.set_error(error_type)
            self.profiler.enqueue(call)
            latency = (call.end_ns - call.start_ns) / 1e6
            records.append(Sent(prompt_id, call.start_ns + self._offset_ns, latency, error_type))
        with self._lock:
            self.sent.extend(records)

    def run(
        self,
        duration_s: float,
        rate_per_s: float,
        make_call: Callable[[int], tuple[str, float, str | None]],
        stop: threading.Event | None = None,
        tick_s: float = 0.05,
    ) -> int:
        """Send ``rate_per_s`` calls a second for ``duration_s`` (or until ``stop``)."""
        per_tick = max(1, round(rate_per_s * tick_s))
        count = 0
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < duration_s and not (stop and stop.is_set()):
            self.burst([make_call(count + i) for i in range(per_tick)])
            count += per_tick
            tick += 1
            pause = started + tick * tick_s - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return count

    def run_in_thread(
        self, duration_s: float, rate_per_s: float,
        make_call: Callable[[int], tuple[str, float, str | None]],
    ) -> tuple[threading.Thread, threading.Event]:
        """:meth:`run` on a background thread; returns the thread and a stop event."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(duration_s, rate_per_s, make_call, stop), daemon=True
        )
        thread.start()
        return thread, stop

    def flush(self) -> None:
        """Wait until the producer sent everything (fails the test otherwise)."""
        assert self.profiler.flush(30), f"producer did not flush: {self.profiler.stats()}"

    def count_by_prompt(self) -> dict[str, int]:
        """Calls sent per prompt id."""
        counts: dict[str, int] = defaultdict(int)
        for call in self.sent:
            counts[call.prompt_id] += 1
        return dict(counts)

    def windows(self, width_s: int) -> dict[tuple[str, int], list[Sent]]:
        """The calls sent, by (prompt id, window start in ns) for windows of ``width_s``."""
        width = width_s * NS
        out: dict[tuple[str, int], list[Sent]] = defaultdict(list)
        for call in self.sent:
            out[(call.prompt_id, call.time_ns - call.time_ns % width)].append(call)
        return dict(out)


def wait_until(
    check: Callable[[], Any], timeout_s: float, what: str,
    explain: Callable[[], str] = lambda: "", interval_s: float = 0.25,
) -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or fail after ``timeout_s``.

    Exceptions from ``check`` (a server that is down) count as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
        except (OSError, StackError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what}; last: {last!r}\n{explain()}"
            )
        time.sleep(interval_s)


@dataclass(frozen=True, slots=True)
class Tally:
    """Calls sent and calls counted in InfluxDB once every window arrived, compared window by
    window: a window holding fewer calls than were sent in it lost them, one holding more
    counted some twice (the two never net out)."""

    sent: int
    counted: float
    rate: float  # calls per second, as the producer paced them
    lost: float
    duplicated: float


@dataclass
class Pipeline:
    """One isolated deployment of the processor on the test servers."""

    broker: TansuBroker
    influx: InfluxDB
    database: str
    topics: ProcessorTopicSettings
    app_id: str
    tmp: Path
    widths_s: list[int]
    allowed_lateness_s: float = 1.0
    checkpoint_interval_s: float = 1.0
    idle_timeout_s: float = 1.0
    workers: list[WorkerProcess] = field(default_factory=list)
    profilers: list[Profiler] = field(default_factory=list)

    def worker_env(self, data_dir: Path) -> dict[str, str]:
        """The environment of a worker: ours without PROMPTPROF_*, plus its settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROF_")}
        env.update(FAUST_ENV)
        env.update({
            "PROMPTPROF_LOG_LEVEL": "info",
            "PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "PROMPTPROF_INFLUX__URL": self.influx.url,
            "PROMPTPROF_INFLUX__API": "v1",
            "PROMPTPROF_INFLUX__DATABASE": self.database,
            "PROMPTPROF_TOPICS__CALLS": self.topics.calls,
            "PROMPTPROF_TOPICS__WINDOWS": self.topics.windows,
            "PROMPTPROF_TOPICS__DEAD_LETTER": self.topics.dead_letter,
            "PROMPTPROF_TOPICS__ALERTS": self.topics.alerts,
            "PROMPTPROF_TOPICS__PARTITIONS": str(self.topics.partitions),
            "PROMPTPROF_WINDOWS__WIDTHS_S": str(self.widths_s),
            "PROMPTPROF_WINDOWS__ALLOWED_LATENESS_S": str(self.allowed_lateness_s),
            "PROMPTPROF_WORKER__APP_ID": self.app_id,
            "PROMPTPROF_WORKER__CHECKPOINT_INTERVAL_S": str(self.checkpoint_interval_s),
            "PROMPTPROF_WORKER__IDLE_TIMEOUT_S": str(self.idle_timeout_s),
            "PROMPTPROF_WORKER__DATA_DIR": str(data_dir),
        })
        return env

    def start_worker(self, name: str = "worker-0") -> WorkerProcess:
        """Start a worker of this pipeline's app id, with a data dir and log of its own."""
        data_dir = self.tmp / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(name, self.worker_env(data_dir), self.tmp / f"{name}.log")
        self.workers.append(worker)
        return worker.start()

    def profiler(self, **producer: Any) -> Profiler:
        """A real producer for the calls topic (closed when the test ends)."""
        settings = load_settings(
            kafka={"bootstrap_servers": self.broker.bootstrap},
            topics=self.topics.model_dump(),
            producer={
                "service_name": SERVICE, "linger_ms": 20, "metrics_log_interval_s": 0,
                **producer,
            },
        )
        profiler = Profiler(settings)
        self.profilers.append(profiler)
        return profiler

    def traffic(self, **producer: Any) -> Traffic:
        """A :class:`Traffic` on a new producer."""
        return Traffic(self.profiler(**producer))

    # -- InfluxDB ------------------------------------------------------------------------

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query on this pipeline's database."""
        return self.influx.rows(query, self.database)

    def calls_by_prompt(self, width_s: int) -> dict[str, float]:
        """``sum(calls)`` of ``llm_window`` per prompt id, for one width."""
        rows = self.rows(
            f"SELECT sum(calls) FROM llm_window WHERE width='{width_s}s' GROUP BY prompt_id"
        )
        return {r["prompt_id"]: r["sum"] for r in rows}

    def points(self, width_s: int) -> dict[tuple[str, int], dict[str, Any]]:
        """Every ``llm_window`` point of a width, by (prompt id, window start ns)."""
        rows = self.rows(f"SELECT * FROM llm_window WHERE width='{width_s}s'")
        return {(r["prompt_id"], r["time"]): r for r in rows}

    def wait_for_windows(
        self, traffic: Traffic, width_s: int, timeout_s: float = 60.0
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """Wait until every window the traffic touched is in InfluxDB with at least the calls
        sent; return the points."""
        expected = traffic.windows(width_s)

        def complete() -> dict[tuple[str, int], dict[str, Any]] | None:
            points = self.points(width_s)
            for key, calls in expected.items():
                if key not in points or points[key]["calls"] < len(calls):
                    return None
            return points

        def explain() -> str:
            try:
                points = self.points(width_s)
            except (OSError, StackError) as exc:
                return f"influxdb: {exc!r}\n" + self.logs()
            missing = {
                k: len(v) for k, v in expected.items()
                if k not in points or points[k]["calls"] < len(v)
            }
            shown = dict(list(missing.items())[:8])
            return (
                f"{len(missing)} of {len(expected)} windows missing or short, e.g. {shown}; "
                f"influx sums {self.calls_by_prompt(width_s)}\n" + self.logs()
            )

        what = f"{len(expected)} windows of {width_s}s"
        result: dict[tuple[str, int], dict[str, Any]] = wait_until(
            complete, timeout_s, what, explain
        )
        return result

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every worker's output."""
        return "\n".join(w.log_tail(lines) for w in self.workers)

    @contextmanager
    def steady_traffic(
        self, rate_per_s: float, make_call: Callable[[int], tuple[str, float, str | None]],
    ) -> Iterator[Traffic]:
        """Calls at ``rate_per_s`` on a background thread (for two minutes at most) while the
        block runs; stopped when it ends, and flushed unless it raised."""
        traffic = self.traffic()
        thread, stop = traffic.run_in_thread(120.0, rate_per_s, make_call)
        try:
            yield traffic
        finally:
            stop.set()
            thread.join()
        traffic.flush()

    def tally(self, traffic: Traffic, width_s: int, timeout_s: float = 90.0) -> Tally:
        """Wait for every window the traffic touched, check that none is extra, and compare
        each window's calls with what was sent in it."""
        sent = traffic.sent
        rate = len(sent) / ((sent[-1].time_ns - sent[0].time_ns) / NS)
        points = self.wait_for_windows(traffic, width_s, timeout_s)
        expected = traffic.windows(width_s)
        assert set(points) == set(expected)
        differences = [points[key]["calls"] - len(calls) for key, calls in expected.items()]
        return Tally(len(sent), sum(p["calls"] for p in points.values()), rate,
                     lost=-sum(d for d in differences if d < 0),
                     duplicated=sum(d for d in differences if d > 0))

    # -- Kafka ---------------------------------------------------------------------------

    def read_topic(
        self, topic: str, expected: int, timeout_s: float = 30.0
    ) -> list[tuple[bytes | None, dict[str, bytes]]]:
        """Read ``topic`` from the start until ``expected`` records or the deadline; return
        (value, headers) pairs."""
        return run_sync(_read_topic(self.broker.bootstrap, topic, expected, timeout_s))

    def group_members(self) -> tuple[str, list[str]]:
        """The state and member ids of the workers' consumer group (Tansu does not return
        the members' assignments)."""
        return run_sync(_describe_group(self.broker.bootstrap, self.app_id))

    def close(self) -> None:
        """Stop every worker (SIGTERM, SIGKILL if ignored) and close the producers."""
        errors = []
        for worker in self.workers:
            try:
                worker.stop(timeout_s=15)
            except AssertionError as exc:
                errors.append(str(exc))
            finally:
                worker.kill()
        for profiler in self.profilers:
            profiler.close(timeout=2)
        if errors:
            raise AssertionError("\n".join(errors))


async def _read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float
) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, fetch_max_bytes=16 * 1_048_576,
        max_partition_fetch_bytes=16 * 1_048_576,
    )
    await consumer.start()
    found: list[tuple[bytes | None, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend((r.value, dict(r.headers)) for r in records)
    finally:
        await consumer.stop()
    return found


async def _describe_group(bootstrap: str, group: str) -> tuple[str, list[str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _name, state, _protocol_type, _protocol, members = response.groups[0][:6]
    return state, sorted(member[0] for member in members)


@pytest.fixture
def pipeline_factory(
    kafka_broker: TansuBroker, influxdb: InfluxDB, unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[Callable[..., Pipeline]]:
    """``pipeline_factory(widths_s=[2], influx=None, **timings)`` -> a :class:`Pipeline` with
    fresh topics (4 partitions), app id and database; its workers are stopped at the end and
    their logs printed (shown if the test failed)."""
    made: list[Pipeline] = []

    def make(*, widths_s: Sequence[int] = (2,), influx: InfluxDB | None = None,
             **timings: float) -> Pipeline:
        server = influx or influxdb
        topics = ProcessorTopicSettings(
            calls=unique_name("calls"), dead_letter=unique_name("dlq"),
            windows=unique_name("windows"), alerts=unique_name("alerts"),
            partitions=PARTITIONS,
        )
        kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap)
        names = [topics.calls, topics.dead_letter, topics.windows, topics.alerts]
        run_sync(create_topics(kafka, names, PARTITIONS))
        database = unique_name("db").replace("-", "_")
        server.create_database(database)
        pipeline = Pipeline(
            broker=kafka_broker, influx=server, database=database, topics=topics,
            app_id=unique_name("app"), tmp=tmp_path / f"pipeline-{len(made)}",
            widths_s=list(widths_s), **timings,
        )
        pipeline.tmp.mkdir(parents=True)
        made.append(pipeline)
        return pipeline

    yield make
    errors = []
    for pipeline in made:
        try:
            pipeline.close()
        except AssertionError as exc:
            errors.append(str(exc))
        print(pipeline.logs(FAILURE_LOG_LINES))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def rng() -> random.Random:
    """A seeded random generator."""
    return random.Random(20261125)


def exact_quantile(values: Sequence[float], q: float) -> float:
    """The value at rank ``q * (n - 1)`` (DDSketch's rank convention)."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]
