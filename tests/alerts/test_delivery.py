"""The dispatcher against the real broker, the real InfluxDB and real webhook receivers:
every alert reaches the alerts topic, an ``llm_alert`` point and its routed receivers; failing,
slow and absent receivers are retried, then dead-lettered, without delaying the caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from promptprof import Settings
from promptprof_processor.alerts import (
    Alert,
    AlertDispatcher,
    AlertSettings,
    GroupingSettings,
    ReceiverSettings,
    RetryPolicy,
    RouteSettings,
    WebhookReceiver,
)
from promptprof_processor.alerts import delivery as delivery_module
from promptprof_processor.alerts import webhooks as webhooks_module
from promptprof_processor.settings import ProcessorSettings, ProcessorTopicSettings
from promptprof_tools.stack import InfluxDB, free_port

from .conftest import SECRET, RecordingLog, sample_alerts

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1, timeout_s=2.0)
# every incident's events sent on their own and at once: these tests count deliveries per alert
UNGROUPED = GroupingSettings(group_by=["fingerprint"], group_wait_s=0, group_interval_s=0)
SECRET_ENV = "PROMPTPROF_TEST_WEBHOOK_SECRET"


async def consume(settings: Settings, topic: str, count: int, timeout_s: float = 20.0
                  ) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records of ``topic`` from the beginning of every partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def with_slo(seed: int = 21) -> list[Alert]:
    """Anomaly alerts (warning) and SLO alerts (critical) of one latency-and-errors incident."""
    alerts = sample_alerts(seed, slo={"latency_p95_ms": {"max": 2000}})
    assert {a.severity for a in alerts} == {"warning", "critical"}
    return alerts


@pytest.fixture
def patched_logs(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    """Record what the dispatcher and the sender log."""
    log = RecordingLog()
    monkeypatch.setattr(delivery_module, "log", log)
    monkeypatch.setattr(webhooks_module, "log", log)
    return log


async def test_alerts_reach_the_topic_influxdb_and_routed_receivers(
    settings_for: Callable[..., ProcessorSettings], fresh_topics: ProcessorTopicSettings,
    influx_database: str,
    influxdb: InfluxDB, receiver_factory: Callable[..., WebhookReceiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = settings_for(topics=fresh_topics, database=influx_database)
    oncall, chat = receiver_factory(), receiver_factory(secret=None)
    config = AlertSettings(
        retry=FAST, grouping=UNGROUPED,
        receivers=[
            ReceiverSettings(name="oncall", url=oncall.url, secret_env=SECRET_ENV),
            ReceiverSettings(name="chat", format="slack", url=chat.url),
        ],
        routes=[
            RouteSettings(receivers=["oncall"]),
            RouteSettings(receivers=["chat"], severities=["critical"], prompt_ids=["summarise"]),
            RouteSettings(receivers=["chat"], prompt_ids=["another-prompt"]),
        ],
    )
    alerts = with_slo()
    dispatcher = AlertDispatcher(settings, config)
    await dispatcher.start()
    assert dispatcher.submit(alerts) == len(alerts)
    assert await dispatcher.wait_idle(30)
    await dispatcher.close()

    records = await consume(settings, fresh_topics.alerts, len(alerts))
    assert sorted(Alert.from_json(r.value).alert_id for r in records if r.value) == sorted(
        a.alert_id for a in alerts
    )
    first = next(r for r in records if r.value and Alert.from_json(r.value) == alerts[0])
    assert first.key == alerts[0].fingerprint.encode()
    assert dict(first.headers)["state"] == alerts[0].state.encode()

    rows = influxdb.rows("SELECT * FROM llm_alert", database=influx_database)
    assert len(rows) == len(alerts)
    by_id = {row["alert_id"]: row for row in rows}
    for alert in alerts:
        row = by_id[alert.alert_id]
        assert row["time"] == alert.window.end_ns
        assert (row["rule"], row["state"], row["severity"]) == (
            alert.rule, alert.state, alert.severity
        )
        assert (row["service"], row["prompt_id"], row["prompt_version"], row["model"]) == (
            "synthetic", "summarise", "v1", "gpt-4o-mini"
        )
        assert row["observed"] == pytest.approx(alert.observed)
        assert row["threshold"] == pytest.approx(alert.threshold)
        assert row["message"] == alert.message and row["width"] == "60s"

    assert sorted(r.json()["alert_id"] for r in oncall.received) == sorted(
        a.alert_id for a in alerts
    )
    assert all(r.verified for r in oncall.received)
    critical = [a for a in alerts if a.severity == "critical"]
    assert len(chat.received) == len(critical)
    assert all(r.json()["text"].startswith((":rotating_light:", ":white_check_mark:"))
               for r in chat.received)
    stats = dispatcher.stats
    assert (stats.published, stats.written, stats.delivered) == (
        len(alerts), len(alerts), len(alerts) + len(critical)
    )
    assert stats.dead_lettered == 0 and stats.dropped == {}


async def test_failing_receivers_are_retried_then_dead_lettered_without_delaying_the_caller(
    settings_for: Callable[..., ProcessorSettings], fresh_topics: ProcessorTopicSettings,
    receiver_factory: Callable[..., WebhookReceiver], monkeypatch: pytest.MonkeyPatch,
    patched_logs: RecordingLog,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = settings_for(topics=fresh_topics, with_influx=False)
    broken, slow, healthy = receiver_factory(), receiver_factory(), receiver_factory()
    broken.status = 500
    slow.delay_s = 3.0
    gone_url = f"http://127.0.0.1:{free_port()}/services/TOKEN-IN-URL"
    policy = RetryPolicy(attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1, timeout_s=0.5)
    config = AlertSettings(
        retry=policy, write_influx=False, concurrency_per_receiver=4, grouping=UNGROUPED,
        receivers=[
            ReceiverSettings(name="broken", url=broken.url, secret_env=SECRET_ENV),
            ReceiverSettings(name="slow", url=slow.url, secret_env=SECRET_ENV),
            ReceiverSettings(name="gone", url=gone_url, secret_env=SECRET_ENV),
            ReceiverSettings(name="healthy", url=healthy.url, secret_env=SECRET_ENV),
        ],
    )
    alerts = with_slo()
    dispatcher = AlertDispatcher(settings, config)
    await dispatcher.start()
    lag = asyncio.create_task(max_loop_lag(2.0))

    started = time.perf_counter()
    dispatcher.submit(alerts)
    submit_s = time.perf_counter() - started
    assert submit_s < 0.05, f"submit took {submit_s:.3f} s"

    published = await consume(settings, fresh_topics.alerts, len(alerts), timeout_s=10)
    assert len(published) == len(alerts)
    assert len(await healthy.wait(len(alerts), timeout_s=10)) == len(alerts)
    assert not dispatcher.idle(), "the slow receiver is still being retried"
    assert await lag < 0.25, "the event loop kept running while receivers failed"

    assert await dispatcher.wait_idle(60)
    await dispatcher.close()
    letters = await consume(settings, fresh_topics.dead_letter, 3 * len(alerts))
    assert len(letters) == 3 * len(alerts)
    reasons: dict[str, set[str]] = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["stage"] == "alerts"
        assert letter.value and Alert.from_json(letter.value).alert_id == headers["alert_id"]
        reasons.setdefault(headers["receiver"], set()).add(headers["reason"])
    assert set(reasons) == {"broken", "slow", "gone"}
    assert reasons["broken"] == {"webhook broken: answered 500 after 3 tries"}
    assert reasons["slow"] == {"webhook slow: no complete answer within 0.5 s after 3 tries"}
    assert all("ConnectError" in r for r in reasons["gone"])
    assert broken.requests == 3 * len(alerts)
    assert dispatcher.stats.dead_lettered == 3 * len(alerts)
    assert dispatcher.stats.delivered == len(alerts)

    logged = patched_logs.text()
    assert "promptprof.alert_dead_lettered" in logged
    assert SECRET not in logged and "TOKEN-IN-URL" not in logged
    assert "TOKEN-IN-URL" not in str(reasons)


async def max_loop_lag(seconds: float, tick_s: float = 0.01) -> float:
    """The longest the event loop was late waking a 10 ms sleeper over ``seconds``."""
    worst = 0.0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        before = loop.time()
        await asyncio.sleep(tick_s)
        worst = max(worst, loop.time() - before - tick_s)
    return worst


async def test_a_re_submitted_alert_is_not_sent_again(
    settings_for: Callable[..., ProcessorSettings], fresh_topics: ProcessorTopicSettings,
    receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    settings = settings_for(topics=fresh_topics, with_influx=False)
    server = receiver_factory(secret=None)
    config = AlertSettings(
        retry=FAST, write_influx=False, grouping=UNGROUPED,
        receivers=[ReceiverSettings(name="r", url=server.url)],
    )
    alerts = sample_alerts()
    dispatcher = AlertDispatcher(settings, config)
    await dispatcher.start()
    assert dispatcher.submit(alerts) == len(alerts)
    assert dispatcher.submit(alerts) == 0
    assert await dispatcher.wait_idle(20)
    await dispatcher.close()
    assert len(server.received) == len(alerts)
    assert dispatcher.stats.duplicates == len(alerts)
    published = await consume(settings, fresh_topics.alerts, 2 * len(alerts), timeout_s=1.5)
    assert len(published) == len(alerts)


async def test_a_storm_reaches_a_slack_receiver_as_few_messages_naming_every_series(
    receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    """300 series of one service and model fire at once: with a group wait of 0.5 s the Slack
    receiver (one message per second) gets one message naming all 300; nothing is dropped and
    what waits is counted while it waits."""
    server = receiver_factory(secret=None)
    config = AlertSettings(
        retry=FAST, write_influx=False, publish_topic=False, queue_size=10,
        grouping=GroupingSettings(group_wait_s=0.5, group_interval_s=60),
        receivers=[ReceiverSettings(name="chat", format="slack", url=server.url)],
    )
    alerts = [
        a.model_copy(update={
            "series": a.series.model_copy(update={"prompt_id": f"prompt-{i}"}),
            "alert_id": f"{a.alert_id}-{i}", "message": f"{a.message} #{i}",
        })
        for i, a in enumerate([sample_alerts()[0]] * 300)
    ]
    dispatcher = AlertDispatcher(ProcessorSettings(), config)
    await dispatcher.start()
    started = time.perf_counter()
    assert dispatcher.submit(alerts) == 300
    assert time.perf_counter() - started < 0.1
    assert dispatcher.waiting() == {"chat": 300}
    (message,) = await server.wait(1, timeout_s=10)
    assert await dispatcher.wait_idle(10)
    await dispatcher.close()
    text = message.json()["text"]
    assert text.startswith(":warning: [FIRING] 300 alerts (service=synthetic, model=gpt-4o-mini)")
    assert all(f"#{i}\n" in text + "\n" for i in range(300))
    assert len(server.received) == 1
    assert dispatcher.stats.delivered == 300 and dispatcher.stats.notifications == 1
    assert dispatcher.stats.dropped == {} and dispatcher.stats.dead_lettered == 0
    assert dispatcher.waiting() == {"chat": 0}


async def test_webhooks_still_go_out_while_kafka_is_down(
    receiver_factory: Callable[..., WebhookReceiver], patched_logs: RecordingLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery_module, "KAFKA_ATTEMPTS", 2)
    settings = ProcessorSettings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}",
                               "request_timeout_ms": 1000})
    server = receiver_factory(secret=None)
    config = AlertSettings(
        retry=FAST, write_influx=False, grouping=UNGROUPED,
        receivers=[ReceiverSettings(name="r", url=server.url)],
    )
    alerts = sample_alerts()
    dispatcher = AlertDispatcher(settings, config)
    await dispatcher.start()
    dispatcher.submit(alerts)
    assert len(await server.wait(len(alerts), timeout_s=10)) == len(alerts)
    assert await dispatcher.wait_idle(30)
    await dispatcher.close()
    assert dispatcher.stats.published == 0 and dispatcher.stats.lost == len(alerts)
    assert "promptprof.alerts_not_published" in patched_logs.events()




async def test_close_drains_a_dispatcher_run_as_a_task(
    receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    """As in the worker: ``run()`` is an app task and ``close()`` is called at shutdown."""
    server = receiver_factory(secret=None)
    server.delay_s = 0.2
    config = AlertSettings(
        retry=FAST, write_influx=False, publish_topic=False, concurrency_per_receiver=1,
        grouping=UNGROUPED, receivers=[ReceiverSettings(name="r", url=server.url)],
    )
    dispatcher = AlertDispatcher(ProcessorSettings(), config)
    task = asyncio.create_task(dispatcher.run())
    alerts = sample_alerts()
    dispatcher.submit(alerts)
    await dispatcher.close(timeout_s=10)
    assert len(server.received) == len(alerts)
    await asyncio.wait_for(task, 1.0)
    assert dispatcher.stats.delivered == len(alerts)


async def test_close_without_run_releases_the_clients() -> None:
    dispatcher = AlertDispatcher(ProcessorSettings(), AlertSettings(write_influx=False))
    await dispatcher.close()
    assert dispatcher._sender._client.is_closed
