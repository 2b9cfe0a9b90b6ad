"""Integration tests of the local stack: real Tansu, real influxd, the stack manager."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from promptprof import KafkaSettings, load_settings
from promptprof_processor.settings import ProcessorTopicSettings
from promptprof_tools.settings import ToolSettings
from promptprof_tools.stack import (
    InfluxDB,
    StackError,
    TansuBroker,
    ensure_topics,
    free_ports,
    kafka_ready,
    port_in_use,
    stack_command,
    tansu_binary,
)
from promptprof_tools.stack.influxdb import set_toml_option

pytestmark = pytest.mark.integration

MakeTopics = Callable[..., Awaitable[list[str]]]


async def _produce(
    bootstrap: str, topic: str, values: list[bytes], codec: str | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=value[:4])
    finally:
        await producer.stop()


async def _produce_batch(bootstrap: str, topic: str, values: list[bytes], codec: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
    await producer.start()
    try:
        batch = producer.create_batch()
        for value in values:
            assert batch.append(key=None, value=value, timestamp=None) is not None
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list[bytes]:
    """Read ``count`` records through a consumer group and commit.

    Tansu answers a new group's first JoinGroup only after half the session timeout, hence
    the short session timeout.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        got = await _read(consumer, count, timeout_s)
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def _consume_assigned(
    bootstrap: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[bytes]:
    """Read ``count`` records of partition 0 without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.start()
    try:
        return await _read(consumer, count, timeout_s)
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, count: int, timeout_s: float) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=500)
            got.extend(m.value for msgs in batches.values() for m in msgs)
    return got


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


# --- Tansu -------------------------------------------------------------------------------------


async def test_broker_answers_metadata(kafka_broker: TansuBroker) -> None:
    assert kafka_broker.is_running()
    assert await kafka_ready(kafka_broker.bootstrap)
    assert kafka_broker.is_healthy()


async def test_produce_consume_round_trip(
    kafka_broker: TansuBroker, make_topics: MakeTopics, unique_name: Callable[[str], str]
) -> None:
    (topic,) = await make_topics(unique_name("rt"), partitions=2)
    values = [f"event-{i}".encode() for i in range(20)]
    await _produce(kafka_broker.bootstrap, topic, values)
    assert sorted(await _consume(kafka_broker.bootstrap, topic, len(values))) == sorted(values)


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
async def test_compressed_batches_round_trip(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    unique_name: Callable[[str], str],
    codec: str,
) -> None:
    (topic,) = await make_topics(unique_name(codec), partitions=1)
    single = [f"{codec}-single-{i}".encode() * 20 for i in range(10)]
    batched = [f"{codec}-batch-{i}".encode() * 20 for i in range(50)]
    await _produce(kafka_broker.bootstrap, topic, single, codec)
    await _produce_batch(kafka_broker.bootstrap, topic, batched, codec)
    got = await _consume_assigned(kafka_broker.bootstrap, topic, len(single) + len(batched))
    assert sorted(got) == sorted(single + batched)


async def test_kill_and_restart_on_the_same_port(
    kafka_broker_factory: Callable[[], TansuBroker],
    make_topics: MakeTopics,
    unique_name: Callable[[str], str],
) -> None:
    broker = kafka_broker_factory()
    port, old_pid = broker.port, broker.pid
    (topic,) = await make_topics(unique_name("kr"), broker=broker)
    await _produce(broker.bootstrap, topic, [b"before"])
    broker.kill()
    assert not broker.is_running()
    assert not await kafka_ready(broker.bootstrap, timeout_s=0.5)
    broker.restart()
    assert broker.port == port and broker.pid != old_pid
    assert await broker.ready()
    assert topic not in await _list_topics(broker.bootstrap)  # memory storage: all gone
    await make_topics(topic, broker=broker)
    await _produce(broker.bootstrap, topic, [b"after"])
    assert await _consume_assigned(broker.bootstrap, topic, 1) == [b"after"]


def test_graceful_stop_frees_the_port(kafka_broker_factory: Callable[[], TansuBroker]) -> None:
    broker = kafka_broker_factory()
    broker.stop()
    assert not broker.is_running()
    assert not port_in_use(broker.port)
    broker.stop()  # idempotent


def test_start_refuses_a_busy_port(tmp_path: Path, kafka_broker: TansuBroker) -> None:
    with pytest.raises(StackError, match="in use"):
        TansuBroker(kafka_broker.port, tmp_path).start()


def test_tansu_binary_gets_its_run_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o644)
    monkeypatch.setenv("PROMPTPROF_TANSU_BIN", str(fake))
    assert tansu_binary() == fake
    assert fake.stat().st_mode & stat.S_IXUSR
    monkeypatch.delenv("PROMPTPROF_TANSU_BIN")
    assert os.access(tansu_binary(), os.X_OK)


# --- topics ------------------------------------------------------------------------------------


async def test_ensure_topics_is_idempotent(
    kafka_broker: TansuBroker, make_topics: MakeTopics, unique_name: Callable[[str], str]
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap)
    topics = ProcessorTopicSettings(
        calls=unique_name("calls"),
        dead_letter=unique_name("dlq"),
        windows=unique_name("windows"),
        alerts=unique_name("alerts"),
        partitions=3,
    )
    await make_topics(topics.alerts, partitions=1)  # an existing topic is kept as it is
    first = await ensure_topics(kafka, topics)
    second = await ensure_topics(kafka, topics)
    expected = {topics.calls: 3, topics.dead_letter: 3, topics.windows: 3, topics.alerts: 1}
    assert first == second == expected


# --- InfluxDB ----------------------------------------------------------------------------------


def test_influx_ping_write_query(influxdb: InfluxDB, influx_database: str) -> None:
    assert influxdb.ping()
    influxdb.write(
        [
            "latency,prompt=a p50=1.5,count=3i 1000000000",
            "latency,prompt=b p50=2.5,count=4i 2000000000",
        ],
        database=influx_database,
    )
    rows = influxdb.rows('SELECT p50, "count" FROM latency GROUP BY prompt', influx_database)
    assert [(r["prompt"], r["p50"], r["count"], r["time"]) for r in rows] == [
        ("a", 1.5, 3, 1_000_000_000),
        ("b", 2.5, 4, 2_000_000_000),
    ]


def test_influx_rejects_bad_queries(influxdb: InfluxDB) -> None:
    with pytest.raises(StackError):
        influxdb.query("SELEKT nonsense")
    with pytest.raises(StackError):
        influxdb.write("not line protocol")


def test_influx_data_survives_restart_and_kill(influxdb_factory: Callable[[], InfluxDB]) -> None:
    server = influxdb_factory()
    server.write("m,k=v x=1 1000000000")
    server.restart()
    server.write("m,k=v x=2 2000000000")
    server.kill()
    assert not server.ping()
    server.start()
    assert [r["x"] for r in server.rows("SELECT x FROM m")] == [1, 2]


def test_set_toml_option_edits_only_its_section() -> None:
    text = 'a = 1\n[http]\n  bind-address = ":8086"\n[ifql]\n  bind-address = ":8082"\n'
    edited = set_toml_option(text, "http", "bind-address", '"127.0.0.1:1"')
    edited = set_toml_option(edited, "", "reporting-disabled", "true")
    assert edited.splitlines() == [
        "reporting-disabled = true",
        "a = 1",
        "[http]",
        '  bind-address = "127.0.0.1:1"',
        "[ifql]",
        '  bind-address = ":8082"',
    ]


# --- stack manager -----------------------------------------------------------------------------


@pytest.fixture
def stack_settings(tmp_path: Path) -> Iterator[ToolSettings]:
    """Settings for a private CLI stack on free ports; brought down at the end whatever happens."""
    kafka_port, influx_port, rpc_port = free_ports(3)
    settings = load_settings(
        cls=ToolSettings,
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}"},
        influx={"url": f"http://127.0.0.1:{influx_port}", "database": "stacktest"},
        topics={"partitions": 2},
        stack={
            "kafka_port": kafka_port,
            "influx_port": influx_port,
            "influx_rpc_port": rpc_port,
            "state_dir": str(tmp_path / "state"),
        },
    )
    yield settings
    stack_command("down", settings)


def _env_for(settings: ToolSettings) -> dict[str, str]:
    stack = settings.stack
    return {
        **os.environ,
        "PROMPTPROF_STACK__KAFKA_PORT": str(stack.kafka_port),
        "PROMPTPROF_STACK__INFLUX_PORT": str(stack.influx_port),
        "PROMPTPROF_STACK__INFLUX_RPC_PORT": str(stack.influx_rpc_port),
        "PROMPTPROF_STACK__STATE_DIR": str(stack.state_dir),
        "PROMPTPROF_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PROMPTPROF_INFLUX__URL": settings.influx.url,
        "PROMPTPROF_INFLUX__DATABASE": settings.influx.database,
        "PROMPTPROF_TOPICS__PARTITIONS": str(settings.topics.partitions),
    }


_UP_IN_A_CHILD = (
    "import sys\n"
    "from promptprof import load_settings\n"
    "from promptprof_tools.settings import ToolSettings\n"
    "from promptprof_tools.stack import stack_command\n"
    "sys.exit(stack_command('up', load_settings(cls=ToolSettings)))\n"
)


def test_stack_up_status_down(
    stack_settings: ToolSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stack_settings
    assert stack_command("status", settings) == 1
    assert stack_command("down", settings) == 0  # nothing to stop
    # `up` in a process that exits: the services must outlive it (detached, pid files).
    child = subprocess.run(
        [sys.executable, "-c", _UP_IN_A_CHILD],
        env=_env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert "kafka: started" in child.stdout and "influxdb: started" in child.stdout
    capsys.readouterr()
    assert stack_command("status", settings) == 0
    assert stack_command("up", settings) == 0
    out = capsys.readouterr().out
    assert out.count("already running, healthy") == 2, out
    _check_provisioned(settings)
    assert stack_command("down", settings) == 0
    assert "stopped" in capsys.readouterr().out
    assert not port_in_use(settings.stack.kafka_port)
    assert not port_in_use(settings.stack.influx_port)
    assert stack_command("down", settings) == 0
    assert capsys.readouterr().out.count("not running") == 2
    assert stack_command("status", settings) == 1


def _check_provisioned(settings: ToolSettings) -> None:
    state = Path(settings.stack.state_dir)
    assert (state / "tansu.pid").is_file() and (state / "influxd.pid").is_file()
    bootstrap = settings.kafka.bootstrap_servers
    topics = settings.topics
    counts = asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), topics))
    assert set(counts.values()) == {2} and len(counts) == 4
    server = InfluxDB(settings.stack.influx_port, settings.stack.influx_rpc_port, state)
    databases = server.rows("SHOW DATABASES", "_internal")
    assert "stacktest" in {row["name"] for row in databases}


def test_stack_up_reports_a_busy_port(
    stack_settings: ToolSettings, kafka_broker: TansuBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = stack_settings.model_copy(
        update={"stack": stack_settings.stack.model_copy(update={"kafka_port": kafka_broker.port})}
    )
    assert stack_command("up", busy) == 1
    assert "in use" in capsys.readouterr().err


def test_stack_rejects_unknown_actions(stack_settings: ToolSettings) -> None:
    assert stack_command("sideways", stack_settings) == 2
