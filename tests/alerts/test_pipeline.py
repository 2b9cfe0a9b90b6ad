"""The alert path as the worker runs it, without Faust: call envelopes -> PartitionWindows ->
AlertEngine (its state checkpointed as bytes beside the window state, restored by a restarted
worker) -> AlertDispatcher -> the real alerts topic and a real webhook receiver."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from promptprof.config import Settings, TopicSettings
from promptprof.envelope import encode_envelope
from promptprof_processor.alerts import (
    Alert,
    AlertDispatcher,
    AlertEngine,
    AlertSettings,
    ReceiverSettings,
    RetryPolicy,
    WebhookReceiver,
)
from promptprof_processor.runtime.checkpoint import Checkpoint
from promptprof_processor.settings import NS_PER_S, WindowSettings
from promptprof_processor.windows.partitions import PartitionWindows

from .conftest import SECRET
from .test_delivery import consume

pytestmark = pytest.mark.integration

T0 = 1_800_000_000 * NS_PER_S
WIDTH_S = 10
CALLS_PER_S = 12
CHANGE_AT = 50  # window index of the latency jump
WINDOWS = 60
RESTART_AT = 30


def calls_of_second(rng: random.Random, second: int, factor: float) -> list[dict[str, Any]]:
    """One second of call events as the producer sends them."""
    events = []
    for i in range(CALLS_PER_S):
        failed = rng.random() < 0.01
        events.append({
            "schema_version": 1,
            "event_id": f"e{second}-{i}",
            "start_time_unix_nano": T0 + second * NS_PER_S + i * (NS_PER_S // CALLS_PER_S),
            "service.name": "checkout",
            "promptprof.prompt.id": "answer",
            "promptprof.prompt.version": "v3",
            "gen_ai.request.model": "gpt-4o-mini",
            "promptprof.latency_ms": rng.lognormvariate(6.5, 0.4) * factor,
            "gen_ai.usage.input_tokens": int(rng.gauss(800, 80)),
            "gen_ai.usage.output_tokens": int(rng.gauss(150, 30)),
            "promptprof.status": "error" if failed else "ok",
            "error.type": "timeout" if failed else None,
        })
    return events


class Worker:
    """What the Faust agent does per record, with a dict standing in for its table."""

    def __init__(self, table: dict[bytes, bytes]) -> None:
        self.table = table
        self.windows = PartitionWindows(
            WindowSettings(widths_s=[WIDTH_S], allowed_lateness_s=0), idle_timeout_s=3600
        )
        self.engine = AlertEngine()

    def handle(self, partition: int, value: bytes, now_ns: int) -> list[Alert]:
        if not self.windows.owns(partition):
            saved = Checkpoint.unpack(self.table.get(b"p%d" % partition))
            self.windows.restore(partition, saved.windows)
            self.engine.restore(partition, saved.alerts)
        outcome = self.windows.handle(partition, value, now_ns)
        return self.engine.observe(outcome.closed, partition)

    def checkpoint(self, partition: int) -> None:
        self.table[b"p%d" % partition] = Checkpoint(
            self.windows.checkpoint(partition), self.engine.state_bytes(partition)
        ).pack()


async def test_a_latency_jump_in_real_calls_reaches_the_topic_and_the_receiver(
    settings_for: Callable[..., Settings], fresh_topics: TopicSettings,
    receiver_factory: Callable[..., WebhookReceiver], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_HOOK_SECRET", SECRET)
    settings = settings_for(topics=fresh_topics, with_influx=False)
    receiver = receiver_factory()
    config = AlertSettings(
        write_influx=False, retry=RetryPolicy(attempts=2, initial_backoff_s=0.05),
        receivers=[ReceiverSettings(name="hook", url=receiver.url,
                                    secret_env="PIPELINE_HOOK_SECRET")],
    )
    dispatcher = AlertDispatcher(settings, config)
    await dispatcher.start()
    rng = random.Random(5)
    table: dict[bytes, bytes] = {}
    worker = Worker(table)
    fired: list[tuple[int, Alert]] = []
    for second in range(WINDOWS * WIDTH_S + 1):
        window = second // WIDTH_S
        if second == RESTART_AT * WIDTH_S:
            worker.checkpoint(2)
            worker = Worker(table)  # a crash after the checkpoint: state comes back from bytes
        factor = 2.0 if window >= CHANGE_AT else 1.0
        events = calls_of_second(rng, second, factor)
        alerts = worker.handle(2, encode_envelope(events), T0 + (second + 1) * NS_PER_S)
        dispatcher.submit(alerts)
        fired.extend((window - 1, a) for a in alerts)  # the window that closed is the previous

    latency = [(i, a) for i, a in fired if a.metric.startswith("latency")]
    assert latency and all(a.state == "firing" for _, a in latency)
    assert latency[0][0] in (CHANGE_AT, CHANGE_AT + 1)
    assert all(i >= CHANGE_AT for i, _ in fired), fired
    first = latency[0][1]
    assert first.series.prompt_id == "answer" and first.window.width_s == WIDTH_S

    assert await dispatcher.wait_idle(20)
    await dispatcher.close()
    records = await consume(settings, fresh_topics.alerts, len(fired))
    assert {Alert.from_json(r.value).alert_id for r in records if r.value} == {
        a.alert_id for _, a in fired
    }
    assert {a["alert_id"] for a in receiver.alerts()} == {a.alert_id for _, a in fired}
    assert all(r.verified for r in receiver.received)
