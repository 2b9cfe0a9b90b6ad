"""``promptprof stack up|down|status``: the local stack as detached background processes.

Pid files and logs live under ``settings.stack.state_dir``; InfluxDB's data too, so it survives
``down``/``up``. With ``stack.kafka_storage: s3`` Tansu keeps its topics, records and group
offsets in a localbucket under it too; with ``memory`` (the default) ``down`` empties Kafka.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import structlog

from promptprof import KafkaSettings
from promptprof_tools.settings import ToolSettings
from promptprof_tools.stack.influxdb import InfluxDB
from promptprof_tools.stack.localbucket import LocalBucket
from promptprof_tools.stack.process import ServiceProcess, StackError, run_sync
from promptprof_tools.stack.tansu import TansuBroker
from promptprof_tools.stack.topics import ensure_topics

log = structlog.get_logger(__name__)

KAFKA_START_TIMEOUT_S = 30.0
S3_START_TIMEOUT_S = 30.0
INFLUX_START_TIMEOUT_S = 60.0
ACTIONS = ("up", "down", "status")


class LocalStack:
    """The stack's two services as configured by ``settings.stack``, with their pid files."""

    def __init__(self, settings: ToolSettings) -> None:
        """Build detached handles on the configured ports and state folder."""
        stack = settings.stack
        self.settings = settings
        self.state_dir = Path(stack.state_dir)
        self.s3 = (
            LocalBucket(stack.s3_port, self.state_dir / "tansu-s3", log_dir=self.state_dir,
                        detach=True)
            if stack.durable else None
        )
        self.kafka = TansuBroker(stack.kafka_port, self.state_dir, storage=self.s3, detach=True)
        self.influx = InfluxDB(
            stack.influx_port,
            stack.influx_rpc_port,
            self.state_dir / "influxdb",
            log_dir=self.state_dir,
            database=settings.influx.database,
            detach=True,
        )

    def services(self) -> list[tuple[str, ServiceProcess, float]]:
        """(label, handle, start timeout) for each service, in start order."""
        storage: list[tuple[str, ServiceProcess, float]] = (
            [] if self.s3 is None else [("s3", self.s3, S3_START_TIMEOUT_S)]
        )
        return [
            *storage,
            ("kafka", self.kafka, KAFKA_START_TIMEOUT_S),
            ("influxdb", self.influx, INFLUX_START_TIMEOUT_S),
        ]

    def pid_file(self, service: ServiceProcess) -> Path:
        """Where the pid of ``service`` is kept."""
        return self.state_dir / f"{service.name}.pid"

    def adopt(self, service: ServiceProcess) -> bool:
        """Attach ``service`` to the process its pid file names; drop a stale pid file."""
        path = self.pid_file(service)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return False
        if service.adopt(pid):
            return True
        path.unlink(missing_ok=True)
        return False

    def kafka_settings(self) -> KafkaSettings:
        """The configured Kafka client settings, pointed at the stack's broker."""
        return self.settings.kafka.model_copy(update={"bootstrap_servers": self.kafka.bootstrap})


def stack_command(action: str, settings: ToolSettings) -> int:
    """Run ``up``, ``down`` or ``status`` on the local stack; return the exit code."""
    commands: dict[str, Callable[[LocalStack], int]] = {
        "up": _up,
        "down": _down,
        "status": _status,
    }
    command = commands.get(action)
    if command is None:
        _say(f"unknown stack action {action!r}: use one of {', '.join(ACTIONS)}", error=True)
        return 2
    return command(LocalStack(settings))


def _up(stack: LocalStack) -> int:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    for label, service, timeout_s in stack.services():
        if not _up_one(stack, label, service, timeout_s):
            _say(f"{label}: log at {service.log_path}", error=True)
            return 1
    try:
        _provision(stack)
    except Exception as exc:  # reported with exit code 1: Kafka, HTTP or OS errors alike
        _say(f"provisioning failed: {exc}", error=True)
        return 1
    _note_client_settings(stack)
    return 0


def _up_one(stack: LocalStack, label: str, service: ServiceProcess, timeout_s: float) -> bool:
    if stack.adopt(service):
        try:
            service.wait_healthy(timeout_s)
        except StackError as exc:
            _say(f"{label}: running (pid {service.pid}) but not healthy: {exc}", error=True)
            return False
        _say(f"{label}: already running, healthy ({_where(service)})")
        return True
    try:
        service.start(timeout_s)
    except StackError as exc:
        _say(f"{label}: failed to start: {exc}", error=True)
        return False
    stack.pid_file(service).write_text(f"{service.pid}\n")
    service.release()
    _say(f"{label}: started ({_where(service)})")
    return True


def _provision(stack: LocalStack) -> None:
    settings = stack.settings
    counts = run_sync(ensure_topics(stack.kafka_settings(), settings.topics))
    listed = ", ".join(f"{name} ({count})" for name, count in counts.items())
    _say(f"kafka: topics {listed}")
    stack.influx.create_database(settings.influx.database)
    _say(f"influxdb: database {settings.influx.database} at {stack.influx.url}")
    try:  # retention per window width, when the processor is installed and it is on
        from promptprof_processor.sink.retention import ensure_configured_policies
    except ImportError:
        return
    database = settings.influx.database
    for statement in ensure_configured_policies(
            lambda q: stack.influx.rows(q, database), database):
        _say(f"influxdb: {statement}")


def _note_client_settings(stack: LocalStack) -> None:
    settings = stack.settings
    if settings.kafka.bootstrap_servers != stack.kafka.bootstrap:
        _say(
            f"note: kafka.bootstrap_servers is {settings.kafka.bootstrap_servers}, "
            f"the stack listens on {stack.kafka.bootstrap}"
        )
    if settings.influx.url.rstrip("/") != stack.influx.url:
        _say(f"note: influx.url is {settings.influx.url}, the stack listens on {stack.influx.url}")


def _down(stack: LocalStack) -> int:
    code = 0
    for label, service, _ in reversed(stack.services()):
        if not stack.adopt(service):
            _say(f"{label}: not running")
            continue
        pid = service.pid
        try:
            service.stop()
        except StackError as exc:
            _say(f"{label}: could not stop pid {pid}: {exc}", error=True)
            code = 1
            continue
        stack.pid_file(service).unlink(missing_ok=True)
        _say(f"{label}: stopped (pid {pid})")
    return code


def _status(stack: LocalStack) -> int:
    all_healthy = True
    for label, service, _ in stack.services():
        running = stack.adopt(service)
        healthy = service.is_healthy()
        all_healthy = all_healthy and healthy
        state = "running" if running else "stopped"
        health = "healthy" if healthy else "unhealthy"
        _say(f"{label:<9} {state:<8} {health:<10} {_where(service)}")
    return 0 if all_healthy else 1


def _where(service: ServiceProcess) -> str:
    ports = "/".join(str(port) for port in service.ports())
    return f"port {ports}, pid {service.pid if service.pid is not None else '-'}"


def _say(line: str, error: bool = False) -> None:
    print(line, file=sys.stderr if error else sys.stdout, flush=True)
