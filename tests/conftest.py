"""Shared fixtures: a real Tansu broker and a real influxd on free loopback ports.

Session fixtures (started once, stopped at the end of the run):

- ``kafka_broker``: a :class:`~promptprof_tools.stack.TansuBroker`; ``.bootstrap`` is the
  ``bootstrap_servers`` string. Shared by every test: do not kill or restart it (Tansu keeps
  everything in memory, so a restart empties it for everyone); use ``kafka_broker_factory``.
- ``influxdb``: an :class:`~promptprof_tools.stack.InfluxDB` (influxd 1.x); ``.url``, ``.database``,
  and stdlib helpers ``.write(lines)``, ``.query(q)``, ``.rows(q)``, ``.create_database(name)``.

Per-test helpers: ``kafka_broker_factory``, ``influxdb_factory`` (private servers that a test
may kill and restart), ``unique_name``, ``make_topics``, ``fresh_topics``, ``influx_database``
and ``settings_for`` (a :class:`~promptprof_tools.settings.ToolSettings`, every section, pointing
at these servers).

If ``influxd`` is missing, the InfluxDB fixtures fail (never skip) with the install hint.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from promptprof import KafkaSettings, load_settings
from promptprof.testing._fake_providers import FakeProviderServer
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_tools.settings import ToolSettings
from promptprof_tools.stack import (
    INFLUXD_INSTALL_HINT,
    InfluxDB,
    ServiceProcess,
    StackError,
    TansuBroker,
    create_topics,
    free_port,
    free_ports,
    influxd_binary,
)

TEST_DATABASE = "promptprof_test"


class SettingsFactory(Protocol):
    """The type of the ``settings_for`` fixture."""

    def __call__(
        self,
        *,
        broker: TansuBroker | None = None,
        influx: InfluxDB | None = None,
        database: str | None = None,
        topics: ProcessorTopicSettings | None = None,
        with_influx: bool = True,
        **overrides: Any,
    ) -> ToolSettings: ...


def _start_broker(log_dir: Path) -> TansuBroker:
    broker = TansuBroker(free_port(), log_dir)
    broker.start()
    return broker


def _start_influxdb(data_dir: Path, database: str = TEST_DATABASE) -> InfluxDB:
    try:
        influxd_binary()
    except StackError:
        pytest.fail(INFLUXD_INSTALL_HINT, pytrace=False)
    port, rpc_port = free_ports(2)
    server = InfluxDB(port, rpc_port, data_dir, database=database)
    server.start(timeout_s=60)
    return server


def _stop_all(servers: Sequence[ServiceProcess]) -> None:
    for server in servers:
        try:
            server.stop()
        except StackError:
            server.kill()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A Tansu broker for the whole session on a free loopback port (memory storage).

    Use ``kafka_broker.bootstrap`` as ``bootstrap_servers``. Shared by all tests: never kill or
    restart it, and use unique topic names (``unique_name``/``make_topics``/``fresh_topics``).
    Topics that a client merely asks metadata for are auto-created by Tansu (4 partitions),
    so create topics explicitly before producing when the partition count matters.
    """
    broker = _start_broker(tmp_path_factory.mktemp("tansu"))
    yield broker
    _stop_all([broker])


@pytest.fixture
def kafka_broker_factory(tmp_path: Path) -> Iterator[Callable[[], TansuBroker]]:
    """A factory of private, started Tansu brokers (each on its own free port).

    Call it to get a broker that the test may ``kill()``, ``stop()`` and ``restart()`` (same
    port, empty again: memory storage). All are stopped when the test ends.
    """
    started: list[TansuBroker] = []

    def make() -> TansuBroker:
        broker = _start_broker(tmp_path / f"tansu-{len(started)}")
        started.append(broker)
        return broker

    yield make
    _stop_all(started)


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    """An influxd 1.x for the whole session on free loopback ports, database ``promptprof_test``.

    ``.url`` is the HTTP base URL, ``.database`` the database; ``.write(lines)``,
    ``.query(q)``, ``.rows(q)`` and ``.create_database(name)`` use the v1 HTTP API. Shared by
    all tests: prefer a database of your own (``influx_database``). Fails with the install
    hint if influxd is missing.
    """
    server = _start_influxdb(tmp_path_factory.mktemp("influxdb"))
    yield server
    _stop_all([server])


@pytest.fixture
def influxdb_factory(tmp_path: Path) -> Iterator[Callable[[], InfluxDB]]:
    """A factory of private, started influxd servers that a test may kill and restart.

    Each keeps its data under the test's tmp_path (kept across ``restart()``); database
    ``promptprof_test``. All are stopped when the test ends.
    """
    started: list[InfluxDB] = []

    def make() -> InfluxDB:
        server = _start_influxdb(tmp_path / f"influxdb-{len(started)}")
        started.append(server)
        return server

    yield make
    _stop_all(started)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Build names unique to this test run, e.g. ``unique_name("calls")`` ->
    ``calls-test_round_trip-1a2b3c4d``: valid as Kafka topic and InfluxDB database names."""
    test = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:60]

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def make_topics(kafka_broker: TansuBroker) -> Callable[..., Awaitable[list[str]]]:
    """Async creator of topics: ``await make_topics("a", "b", partitions=2)`` -> the names.

    Creates on the session broker, or on ``broker=`` (e.g. one from ``kafka_broker_factory``).
    Idempotent: existing topics are kept as they are.
    """

    async def make(
        *names: str, partitions: int = 1, broker: TansuBroker | None = None
    ) -> list[str]:
        target = broker or kafka_broker
        await create_topics(KafkaSettings(bootstrap_servers=target.bootstrap), names, partitions)
        return list(names)

    return make


@pytest.fixture
async def fresh_topics(
    kafka_broker: TansuBroker, unique_name: Callable[[str], str]
) -> ProcessorTopicSettings:
    """A :class:`ProcessorTopicSettings` with unique calls/dlq/windows/alerts names, already
    created on the session broker with 4 partitions each. Pass it to
    ``settings_for(topics=...)``."""
    topics = ProcessorTopicSettings(
        calls=unique_name("calls"),
        dead_letter=unique_name("dlq"),
        windows=unique_name("windows"),
        alerts=unique_name("alerts"),
        partitions=4,
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap)
    await create_topics(kafka, [topics.calls, topics.dead_letter, topics.windows, topics.alerts], 4)
    return topics


@pytest.fixture
def influx_database(influxdb: InfluxDB, unique_name: Callable[[str], str]) -> str:
    """The name of a new, empty database on the session ``influxdb``, unique to this test."""
    name = unique_name("db").replace("-", "_")
    influxdb.create_database(name)
    return name


@pytest.fixture
def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> SettingsFactory:
    """Factory of :class:`ToolSettings` pointing at the test servers, via ``load_settings``.

    ``settings_for(broker=None, influx=None, database=None, topics=None, with_influx=True,
    **overrides)``: Kafka defaults to the session ``kafka_broker``; InfluxDB (api v1) to the
    session ``influxdb`` unless ``with_influx=False`` (then influxd is not started); database
    defaults to the server's own. ``stack`` ports follow the servers and ``state_dir`` is under
    tmp_path. ``overrides`` are ``load_settings`` keyword arguments; dict values are merged
    into the generated sections, e.g. ``settings_for(producer={"linger_ms": 5})``.
    """

    def build(
        *,
        broker: TansuBroker | None = None,
        influx: InfluxDB | None = None,
        database: str | None = None,
        topics: ProcessorTopicSettings | None = None,
        with_influx: bool = True,
        **overrides: Any,
    ) -> ToolSettings:
        broker = broker or request.getfixturevalue("kafka_broker")
        sections: dict[str, Any] = {
            "kafka": {"bootstrap_servers": broker.bootstrap},
            "stack": {"kafka_port": broker.port, "state_dir": str(tmp_path / "stack")},
        }
        if influx is None and with_influx:
            influx = request.getfixturevalue("influxdb")
        if influx is not None:
            sections["influx"] = {
                "url": influx.url,
                "api": "v1",
                "database": database or influx.database,
            }
            sections["stack"].update(influx_port=influx.port, influx_rpc_port=influx.rpc_port)
        if topics is not None:
            sections["topics"] = topics.model_dump()
        settings: ToolSettings = load_settings(cls=ToolSettings, **_merge(sections, overrides))
        return settings

    return build


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProviderServer]:
    """One fake OpenAI/Anthropic HTTP server (promptprof.testing) for the session."""
    with FakeProviderServer() as server:
        yield server


@pytest.fixture
def server(fake_server: FakeProviderServer) -> Iterator[FakeProviderServer]:
    """The fake server with no scripted reply and no recorded request."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()
