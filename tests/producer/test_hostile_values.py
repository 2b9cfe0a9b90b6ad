"""Values a user gives that InfluxDB could not read back exactly are refused by the producer,
one counted drop per call (``dropped_invalid_value``), never truncated, never raised into the
host; every other call reaches Kafka unchanged. Against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from promptprof import ConfigError, Profiler, load_settings
from promptprof._envelope import decode_record
from promptprof_tools.stack import TansuBroker, create_topics

pytestmark = pytest.mark.integration

HOSTILE_SPECS: list[dict[str, Any]] = [
    {"prompt_id": "ends\\"},
    {"prompt_id": "two\nlines"},
    {"prompt_id": "p" * 65_536},
    {"version": "v1\n"},
    {"version": "x\\,y"},
    {"model": "gpt\\"},
    {"model": "lone \ud800"},
    {"labels": {"tenant": "a\\ b"}},
    {"labels": {"tenant": "t" * 257}},
    {"labels": {"k" * 65: "v"}},
]
ACCEPTED_SPECS: list[dict[str, Any]] = [
    {"prompt_id": 'quo"te, a=b c\ttab 😀'},
    {"version": "C:\\dir\r"},
    {"model": ""},
    {"labels": {"tenant": "acme,inc = \"x\" \x00"}},
]


def read_events(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        try:
            while len(events) < expected and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        events.extend(decode_record(record.value))
        finally:
            await consumer.stop()
        return events

    return asyncio.run(run())


def test_hostile_calls_are_dropped_and_counted_and_the_rest_arrive_unchanged(
    kafka_broker: TansuBroker, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("calls")
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_broker.bootstrap},
        topics={"calls": topic},
        producer={"metrics_log_interval_s": 0, "linger_ms": 5},
    )
    asyncio.run(create_topics(settings.kafka, [topic], partitions=1))
    profiler = Profiler(settings)
    try:
        for overrides in HOSTILE_SPECS + ACCEPTED_SPECS:
            spec = {"prompt_id": "p", "version": "v1", "model": "m", **overrides}
            with profiler.track(**spec) as call:
                pass
        with profiler.track("p", "v1") as call:
            call.set_error("Bad\nError")  # an error type is a tag too
        with profiler.track("p", "v1") as call:
            call.label("tenant", "late\\")  # a label set during the call
        assert profiler.flush(timeout=20)
        stats = profiler.stats()
    finally:
        profiler.close()
    assert stats["dropped_invalid_value"] == len(HOSTILE_SPECS) + 2
    assert stats["dropped"] == len(HOSTILE_SPECS) + 2
    assert "refused a call" in stats["last_error"]
    events = read_events(kafka_broker.bootstrap, topic, len(ACCEPTED_SPECS))
    assert stats["sent_events"] == len(events) == len(ACCEPTED_SPECS)
    sent = sorted(
        (e["promptprof.prompt.id"], e["promptprof.prompt.version"], e["gen_ai.request.model"],
         e["promptprof.labels"]) for e in events
    )
    expected = sorted(
        (s.get("prompt_id", "p"), s.get("version", "v1"), s.get("model", "m"), s.get("labels", {}))
        for s in ACCEPTED_SPECS
    )
    assert sent == expected


@pytest.mark.parametrize("service", ["ends\\", "new\nline", "", "s" * 129, "a\\=b"])
def test_a_service_name_that_cannot_be_a_tag_is_refused_when_the_configuration_loads(
    service: str,
) -> None:
    with pytest.raises(ConfigError, match=r"producer\.service_name .*InfluxDB tag must read back"):
        load_settings(producer={"service_name": service})
