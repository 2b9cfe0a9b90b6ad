"""The producer against a real Tansu broker: delivery, order, outages, close and fork."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from promptprof import Profiler, load_settings, profile
from promptprof._envelope import decode_record
from promptprof._event import CallEvent, series_key
from promptprof.export._packing import partition_of
from promptprof_tools.stack import TansuBroker, create_topics, free_port

pytestmark = pytest.mark.integration
TOPIC = "llm.calls"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of this test's own (memory storage), with the calls topic."""
    handle = TansuBroker(free_port(), tmp_path)
    handle.start()
    _create_topic(handle)
    yield handle
    handle.stop()


def _create_topic(broker: TansuBroker) -> None:
    kafka = load_settings(kafka={"bootstrap_servers": broker.bootstrap}).kafka
    asyncio.run(create_topics(kafka, [TOPIC], partitions=3))


def _profiler(bootstrap: str, **producer: Any) -> Profiler:
    settings = load_settings(
        kafka={"bootstrap_servers": bootstrap, "request_timeout_ms": 3000},
        producer={
            "metrics_log_interval_s": 0,
            "linger_ms": 5,
            "retry_backoff_max_ms": 500,
            **producer,
        },
    )
    return Profiler(settings)


def _consume(
    bootstrap: str, expected: int, timeout_s: float = 30.0
) -> list[tuple[int, dict[str, Any]]]:
    """(partition, event) pairs in log order, until ``expected`` events or the deadline."""

    async def run() -> list[tuple[int, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(
            TOPIC,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=f"test-{time.monotonic_ns()}",
        )
        await consumer.start()
        found: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        found.extend((tp.partition, e) for e in decode_record(record.value))
        finally:
            await consumer.stop()
        return found

    return asyncio.run(run())


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def _counter(event_id: str) -> int:
    return int(event_id[12:], 16)


def test_events_arrive_intact_and_in_order_on_their_series_partition(
    broker: TansuBroker,
) -> None:
    # one cycle at the first call, the next at close: each packs one record per partition
    prof = _profiler(broker.bootstrap, linger_ms=60_000, batch_max_events=10_000)
    fns = [
        profile(prompt_id=f"p{i}", version="v1", model="gpt-4o", provider="openai", profiler=prof)(
            lambda: None
        )
        for i in range(40)
    ]
    for _ in range(150):
        for fn in fns:
            fn()
    assert prof.close(10)
    found = _consume(broker.bootstrap, 6000)
    assert len(found) == 6000
    last: dict[str, int] = {}
    for partition, raw in found:
        event = CallEvent.model_validate(raw)
        assert partition == partition_of(series_key(raw), 3), "not the key's partition"
        assert _counter(event.event_id) > last.get(event.prompt_id, -1), "out of order"
        last[event.prompt_id] = _counter(event.event_id)
    stats = prof.stats()
    assert stats["sent_events"] == 6000
    assert stats["sent_records"] <= 2 * 3, "records do not hold several series"


def test_broker_absent_at_start_then_started(tmp_path: Path) -> None:
    port = free_port()
    prof = _profiler(f"127.0.0.1:{port}")

    @profile(prompt_id="late", profiler=prof)
    def call(x: int) -> int:
        return x

    assert [call(i) for i in range(500)] == list(range(500))
    _wait_for(lambda: prof.stats()["connect_failures"] >= 2)
    assert prof.stats()["sent_events"] == 0
    broker = TansuBroker(port, tmp_path)
    broker.start()
    try:
        _create_topic(broker)
        assert prof.flush(30)
        assert len(_consume(broker.bootstrap, 500)) == 500
        assert prof.stats()["dropped"] == 0
    finally:
        prof.close(1)
        broker.stop()


def test_broker_killed_and_restarted_loses_only_counted_events(broker: TansuBroker) -> None:
    prof = _profiler(broker.bootstrap, buffer_size=1000, batch_max_events=100)

    @profile(prompt_id="outage", profiler=prof)
    def call() -> str:
        return "ok"

    for _ in range(300):
        call()
    assert prof.flush(20)
    before = prof.stats()["sent_events"]
    assert before == 300
    broker.kill()
    results = [call() for _ in range(8000)]
    assert results == ["ok"] * 8000
    _wait_for(lambda: prof.stats()["send_errors"] + prof.stats()["retries"] > 0)
    broker.restart()
    _create_topic(broker)
    assert prof.flush(60)
    stats = prof.stats()
    delivered = stats["sent_events"] - before
    assert stats["dropped_buffer_full"] > 0
    assert delivered + stats["dropped"] == 8000
    assert len(_consume(broker.bootstrap, delivered)) >= delivered
    prof.close(1)


def test_close_flushes_everything_buffered(broker: TansuBroker) -> None:
    prof = _profiler(broker.bootstrap, linger_ms=1000)

    @profile(prompt_id="closing", profiler=prof)
    def call() -> None:
        return None

    for _ in range(5000):
        call()
    assert prof.close(15)
    assert prof.stats()["dropped"] == 0
    assert len(_consume(broker.bootstrap, 5000)) == 5000


def test_forked_child_publishes_with_its_own_sender(broker: TansuBroker) -> None:
    prof = _profiler(broker.bootstrap)

    @profile(prompt_id="parent", profiler=prof)
    def parent_call() -> None:
        return None

    @profile(prompt_id="child", profiler=prof)
    def child_call() -> None:
        return None

    for _ in range(50):
        parent_call()
    pid = os.fork()
    if pid == 0:  # the child: publish, flush, report by exit code
        for _ in range(100):
            child_call()
        os._exit(0 if prof.close(15) and prof.stats()["sent_events"] == 100 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert prof.close(10)
    found = _consume(broker.bootstrap, 150)
    by_prompt: dict[str, set[str]] = defaultdict(set)
    for _, event in found:
        by_prompt[event["promptprof.prompt.id"]].add(event["event_id"][:12])
    assert sum(1 for _, e in found if e["promptprof.prompt.id"] == "parent") == 50
    assert sum(1 for _, e in found if e["promptprof.prompt.id"] == "child") == 100
    assert by_prompt["parent"].isdisjoint(by_prompt["child"]), "child reused the parent's ids"
