"""The alert path as the worker runs it, without Faust: call envelopes -> a partition's run ->
AlertEngine (its state checkpointed beside the window state, restored by a restarted worker)
-> AlertDispatcher -> the real alerts topic and a real webhook receiver."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from promptprof._envelope import encode_envelope
from promptprof_processor.alerts import (
    Alert,
    AlertDispatcher,
    AlertEngine,
    AlertSettings,
    ReceiverSettings,
    RetryPolicy,
    WebhookReceiver,
)
from promptprof_processor.runtime.partition import PartitionRun
from promptprof_processor.settings import (
    NS_PER_S,
    ProcessorSettings,
    ProcessorTopicSettings,
    WindowSettings,
)
from tests.processor.runs import MemoryLog, clock

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


SETTINGS = WindowSettings(widths_s=[WIDTH_S], allowed_lateness_s=0)


def worker(saved: MemoryLog | None = None) -> PartitionRun:
    """Partition 2's run: fresh, or restored from ``saved`` with an engine of its own."""
    if saved is None:
        engine = AlertEngine()
        engine.restore(2, None)
        return PartitionRun(2, SETTINGS, next_offset=0, alerts=engine, idle_timeout_s=3600)
    return saved.restore(2, SETTINGS, alerts=AlertEngine(), idle_timeout_s=3600)


async def test_a_latency_jump_in_real_calls_reaches_the_topic_and_the_receiver(
    settings_for: Callable[..., ProcessorSettings], fresh_topics: ProcessorTopicSettings,
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
    saved = MemoryLog()
    run = worker()
    fired: list[tuple[int, Alert]] = []
    for second in range(WINDOWS * WIDTH_S + 1):
        window = second // WIDTH_S
        if second == RESTART_AT * WIDTH_S:
            saved.checkpoint(run)
            run = worker(saved)  # a crash after the checkpoint: state comes back from it
        factor = 2.0 if window >= CHANGE_AT else 1.0
        events = calls_of_second(rng, second, factor)
        outputs = run.take(second, encode_envelope(events), clock(T0 + (second + 1) * NS_PER_S))
        alerts = [o.alert for o in outputs if o.alert is not None]
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
