"""The alert dispatcher: alert events to the alerts topic, to InfluxDB and to webhooks.

:meth:`AlertDispatcher.submit` only puts each alert on bounded in-memory queues, one per
output (the alerts topic, InfluxDB, and each receiver), and returns at once: window processing
never waits for a broker, a database or a webhook. Background tasks (:meth:`run`) drain the
queues independently, so a receiver that is down or slow delays only its own deliveries.

- Alerts topic: key = the alert's fingerprint (one alert's events stay in order), value = the
  alert JSON, headers ``state``, ``severity``, ``rule``. Retried with backoff.
- InfluxDB: the ``llm_alert`` point (:func:`promptprof_processor.alerts.events.alert_line`),
  in batches, through :class:`~promptprof_processor.sink.influx.RetryingWriter`; a re-written alert
  overwrites its own point.
- Webhooks: the receivers of every matching route (every receiver when no route is configured).
  Each receiver groups its alerts into notifications (group wait, group interval, group keys:
  :mod:`.grouping`) and sends them under its rate limit, each delivery retried per the retry
  policy (:class:`~.webhooks.WebhookSender`; a ``Retry-After`` holds back the whole receiver).
  Nothing waiting for a receiver is dropped; :meth:`AlertDispatcher.waiting` counts it. After
  the last try, each alert of the notification goes to the dead-letter topic with headers
  ``reason``, ``stage=alerts``, ``receiver`` and ``alert_id``.

An alert id already submitted (a re-processed window) is not dispatched again. A full topic or
InfluxDB queue drops the alert for that output (counted in :attr:`AlertDispatcher.stats`,
logged). On :meth:`AlertDispatcher.close`, every group still waiting is sent at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import AIOKafkaProducer

from promptprof._backoff import Backoff
from promptprof_processor.alerts.events import Alert, alert_line
from promptprof_processor.alerts.grouping import Grouper, Limiter, Notification
from promptprof_processor.alerts.settings import (
    AlertSettings,
    GroupingSettings,
    ReceiverSettings,
    RouteSettings,
)
from promptprof_processor.alerts.webhooks import Receiver, WebhookSender
from promptprof_processor.settings import ProcessorSettings
from promptprof_processor.sink.influx import LineWriter, RetryingWriter, make_writer

log = structlog.get_logger("promptprof.alerts")

T = TypeVar("T")
SEEN_IDS = 20_000
BATCH = 500
KAFKA_ATTEMPTS = 5


@dataclass
class DispatchStats:
    """Counts of what the dispatcher did."""

    submitted: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    published: int = 0
    written: int = 0
    delivered: int = 0  # alerts delivered to a receiver
    notifications: int = 0  # requests that delivered them
    rate_limited: int = 0  # notifications that waited for their receiver's rate limit
    dead_lettered: int = 0
    lost: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An alert that a receiver did not take, and why."""

    alert: Alert
    receiver: str
    reason: str


class Router:
    """Picks the receivers of an alert from the routes."""

    def __init__(self, routes: Sequence[RouteSettings], receivers: Sequence[str]) -> None:
        """Routes over the named receivers; no routes send everything to every receiver."""
        self.routes = list(routes)
        self.receivers = list(receivers)

    def receivers_for(self, alert: Alert) -> list[str]:
        """The receivers of every route that matches ``alert``, each once, in route order."""
        if not self.routes:
            return list(self.receivers)
        chosen: dict[str, None] = {}
        for route in self.routes:
            if _matches(route, alert):
                chosen.update(dict.fromkeys(route.receivers))
        return list(chosen)


def _matches(route: RouteSettings, alert: Alert) -> bool:
    return (
        (not route.prompt_ids or alert.series.prompt_id in route.prompt_ids)
        and (not route.services or alert.series.service in route.services)
        and (not route.severities or alert.severity in route.severities)
    )


class _Lane(Generic[T]):
    """A bounded queue drained by worker tasks, ``batch`` items at a time."""

    def __init__(
        self, name: str, size: int, handle: Callable[[list[T]], Awaitable[None]], *,
        workers: int = 1, batch: int = 1,
    ) -> None:
        self.name = name
        self.queue: asyncio.Queue[T] = asyncio.Queue(size)
        self.handle = handle
        self.workers = workers
        self.batch = batch
        self.busy = 0
        self.tasks: list[asyncio.Task[None]] = []

    def offer(self, item: T) -> bool:
        """Queue ``item`` unless the queue is full."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def start(self) -> None:
        """Start the worker tasks."""
        self.tasks = [
            asyncio.create_task(self._work(), name=f"alerts-{self.name}-{i}")
            for i in range(self.workers)
        ]

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being handled."""
        return self.queue.empty() and self.busy == 0

    async def _work(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            self.busy += 1
            try:
                await self.handle(items)
            except Exception as exc:  # a bug must not stop the lane
                log.exception("promptprof.alert_lane_failed", lane=self.name, error=repr(exc))
            finally:
                self.busy -= 1

    async def stop(self) -> None:
        """Cancel the workers and wait for them."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class _ReceiverLane:
    """One receiver: alerts grouped into notifications, sent under the receiver's rate limit."""

    def __init__(
        self, settings: ReceiverSettings, grouping: GroupingSettings,
        deliver: Callable[[Notification, Limiter], Awaitable[None]], workers: int,
    ) -> None:
        self.name = settings.name
        self.grouper = Grouper(grouping)
        self.limiter = Limiter(settings.rate())
        self.ready: asyncio.Queue[Notification] = asyncio.Queue()
        self.deliver = deliver
        self.workers = workers
        self.queued = 0  # alerts in the notifications of ``ready``
        self.in_flight = 0
        self.tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def offer(self, alert: Alert) -> None:
        """Put an alert in its group; never blocks, never drops."""
        self.grouper.add(alert, time.monotonic())
        self._wake.set()

    def start(self) -> None:
        """Start the scheduler and the sender tasks."""
        self.tasks = [asyncio.create_task(self._schedule(), name=f"alerts-{self.name}-groups")]
        self.tasks += [
            asyncio.create_task(self._work(), name=f"alerts-{self.name}-{i}")
            for i in range(self.workers)
        ]

    def flush(self) -> None:
        """Release every group now (at shutdown)."""
        self._release(math.inf)

    def _release(self, now: float) -> None:
        for note in self.grouper.due(now):
            self.queued += len(note.alerts)
            self.ready.put_nowait(note)

    async def _schedule(self) -> None:
        while True:
            self._release(time.monotonic())
            due = self.grouper.next_due()
            self._wake.clear()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self) -> None:
        while True:
            note = await self.ready.get()
            self.queued -= len(note.alerts)
            self.in_flight += len(note.alerts)
            try:
                await self.deliver(note, self.limiter)
            except Exception as exc:  # a bug must not stop the lane
                log.exception("promptprof.alert_lane_failed", lane=self.name, error=repr(exc))
            finally:
                self.in_flight -= len(note.alerts)

    @property
    def waiting(self) -> int:
        """Alerts not yet delivered: in groups, in notifications queued or being sent."""
        return self.grouper.waiting + self.queued + self.in_flight

    @property
    def idle(self) -> bool:
        """Nothing waiting."""
        return self.waiting == 0

    async def stop(self) -> None:
        """Cancel the tasks and wait for them."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class AlertDispatcher:
    """Publishes alerts to the alerts topic, InfluxDB and webhooks without blocking the caller."""

    def __init__(
        self, settings: ProcessorSettings, alerts: AlertSettings | None = None, *,
        producer: AIOKafkaProducer | None = None, writer: LineWriter | None = None,
        sender: WebhookSender | None = None,
    ) -> None:
        """Resolve receivers (raising on a bad URL or missing secret) and set up the queues.

        ``producer``, ``writer`` and ``sender`` are made from the settings unless given; the
        dispatcher closes those it made.
        """
        self.settings = settings
        self.alerts = alerts or AlertSettings()
        config = self.alerts
        self.receivers = {
            r.name: Receiver.resolve(r, config.allowed_hosts) for r in config.receivers
        }
        self.router = Router(config.routes, list(self.receivers))
        self.stats = DispatchStats()
        self._producer = producer
        self._owns_producer = producer is None
        self._producer_lock = asyncio.Lock()
        self._writer = (
            RetryingWriter(writer or make_writer(settings.influx)) if config.write_influx else None
        )
        self._sender = sender or WebhookSender(
            config.retry, max_response_bytes=config.max_response_bytes,
            repeat_interval_s=config.repeat_interval_s,
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lanes = self._make_lanes()
        self._receiver_lanes = {
            r.name: _ReceiverLane(
                r, config.grouping, self._deliverer(self.receivers[r.name]),
                config.concurrency_per_receiver,
            )
            for r in config.receivers
        }
        self._closing = asyncio.Event()
        self._running = False
        self._stopped = asyncio.Event()
        self._drain_timeout_s = 10.0
        self._task: asyncio.Task[None] | None = None

    def _make_lanes(self) -> dict[str, _Lane[Any]]:
        size = self.alerts.queue_size
        lanes: dict[str, _Lane[Any]] = {
            "dead_letter": _Lane("dead_letter", size, self._dead_letter, batch=BATCH),
        }
        if self.alerts.publish_topic:
            lanes["topic"] = _Lane("topic", size, self._publish, batch=BATCH)
        if self.alerts.write_influx:
            lanes["influx"] = _Lane("influx", size, self._write, batch=BATCH)
        return lanes

    # -- the caller's side ----------------------------------------------------------------------

    def submit(self, alerts: Iterable[Alert]) -> int:
        """Queue alerts for every output; never blocks. Returns how many were new."""
        accepted = 0
        for alert in alerts:
            if alert.alert_id in self._seen:
                self.stats.duplicates += 1
                continue
            self._remember(alert.alert_id)
            self.stats.submitted += 1
            accepted += 1
            for lane in ("topic", "influx"):
                if lane in self._lanes:
                    self._offer(lane, alert)
            for name in self.router.receivers_for(alert):
                self._receiver_lanes[name].offer(alert)
        return accepted

    def _remember(self, alert_id: str) -> None:
        self._seen[alert_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    def _offer(self, lane: str, item: Any) -> bool:
        if self._lanes[lane].offer(item):
            return True
        dropped = self.stats.dropped
        dropped[lane] = dropped.get(lane, 0) + 1
        log.error("promptprof.alert_dropped", output=lane, reason="queue full",
                  queue_size=self.alerts.queue_size, dropped=dropped[lane])
        return False

    @property
    def webhook_failed_attempts(self) -> int:
        """Webhook tries that failed (each retry counts)."""
        return self._sender.failed_attempts

    @property
    def influx_write_failures(self) -> int:
        """Failed tries to write alerts to InfluxDB."""
        return self._writer.failures if self._writer is not None else 0

    def idle(self) -> bool:
        """Nothing queued and nothing in progress on any output."""
        return all(lane.idle for lane in self._lanes.values()) and not any(self.waiting().values())

    def waiting(self) -> dict[str, int]:
        """Alerts waiting for each receiver (grouped, rate-limited, or being sent)."""
        return {name: lane.waiting for name, lane in self._receiver_lanes.items()}

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until :meth:`idle` (True) or ``timeout_s`` passed (False)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.idle():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- the background side --------------------------------------------------------------------

    async def start(self) -> None:
        """Run :meth:`run` as a background task (stopped by :meth:`close`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="alert-dispatcher")
            await asyncio.sleep(0)

    async def run(self) -> None:
        """Drain the queues until :meth:`close`; then finish what is queued (bounded in time).

        Run it as a task (a Faust ``app.task``, or :meth:`start`); cancelling it stops at once.
        """
        self._running = True
        lanes: list[_Lane[Any] | _ReceiverLane] = [
            *self._lanes.values(), *self._receiver_lanes.values()
        ]
        for lane in lanes:
            lane.start()
        log.info("promptprof.alert_dispatcher_started", receivers=sorted(self.receivers))
        try:
            await self._closing.wait()
            for receiver in self._receiver_lanes.values():
                receiver.flush()
            if not await self.wait_idle(self._drain_timeout_s):
                log.warning("promptprof.alert_dispatcher_unfinished", **self._backlog())
        finally:
            for lane in lanes:
                await lane.stop()
            await self._release()
            self._stopped.set()

    def _backlog(self) -> dict[str, int]:
        backlog = {name: lane.queue.qsize() + lane.busy for name, lane in self._lanes.items()}
        return backlog | {f"webhook:{k}": v for k, v in self.waiting().items()}

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop after delivering what is queued, waiting at most ``timeout_s`` for it."""
        self._drain_timeout_s = timeout_s
        self._closing.set()
        await asyncio.sleep(0)  # a run() task created just now gets to start
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        elif self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout_s + 5.0)
        else:
            await self._release()

    async def _release(self) -> None:
        if self._producer is not None and self._owns_producer:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        await self._sender.close()
        if self._writer is not None:
            await self._writer.close()

    # -- outputs ---------------------------------------------------------------------------------

    async def _kafka(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(acks="all", **self.settings.kafka.client_options())
                try:
                    await producer.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _send_all(self, topic: str, records: list[tuple[bytes, bytes, list[Any]]]) -> bool:
        """Send records to ``topic``, retried with backoff; False when every try failed."""
        backoff = Backoff(0.2, 10.0)
        for attempt in range(1, KAFKA_ATTEMPTS + 1):
            try:
                producer = await self._kafka()
                futures = [
                    await producer.send(topic, value, key=key, headers=headers)
                    for key, value, headers in records
                ]
                await asyncio.gather(*futures)
                return True
            except Exception as exc:
                log.warning("promptprof.alert_kafka_failed", topic=topic, error=repr(exc),
                            attempt=attempt, records=len(records))
                if attempt < KAFKA_ATTEMPTS:
                    await asyncio.sleep(backoff.next())
        return False

    async def _publish(self, alerts: list[Alert]) -> None:
        records = [
            (a.fingerprint.encode(), a.to_json(), [
                ("state", a.state.encode()), ("severity", a.severity.encode()),
                ("rule", a.rule.encode()),
            ])
            for a in alerts
        ]
        if await self._send_all(self.settings.topics.alerts, records):
            self.stats.published += len(alerts)
        else:
            self.stats.lost += len(alerts)
            log.error("promptprof.alerts_not_published", alerts=len(alerts))

    async def _write(self, alerts: list[Alert]) -> None:
        assert self._writer is not None  # the lane exists only with a writer
        if await self._writer.write([alert_line(a) for a in alerts]):
            self.stats.written += len(alerts)

    def _deliverer(self, receiver: Receiver) -> Callable[[Notification, Limiter], Awaitable[None]]:
        async def deliver(note: Notification, limiter: Limiter) -> None:
            waits = limiter.waits
            result = await self._sender.deliver(receiver, note, limiter)
            self.stats.rate_limited += int(limiter.waits > waits)
            if result.ok:
                self.stats.delivered += len(note.alerts)
                self.stats.notifications += 1
                return
            reason = f"webhook {receiver.name}: {result.reason} after {result.attempts} tries"
            for alert in note.alerts:
                self._offer("dead_letter", DeadLetter(alert, receiver.name, reason))

        return deliver

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        records = [
            (d.alert.fingerprint.encode(), d.alert.to_json(), [
                ("reason", d.reason[:1000].encode()), ("stage", b"alerts"),
                ("receiver", d.receiver.encode()), ("alert_id", d.alert.alert_id.encode()),
            ])
            for d in letters
        ]
        for letter in letters:
            log.error("promptprof.alert_dead_lettered", receiver=letter.receiver,
                      alert_id=letter.alert.alert_id, reason=letter.reason)
        if await self._send_all(self.settings.topics.dead_letter, records):
            self.stats.dead_lettered += len(letters)
        else:
            self.stats.lost += len(letters)
