"""The records a worker produces (closed windows, dead letters), held until the broker has them.

Faust's ``topic.send()`` only queues a record; a delivery that fails is logged by Faust and
forgotten. Tansu answers produce requests with UnknownError for a while after a restart, which
lost windows that way. The worker's checkpoint waits for :func:`deliver` before it saves the
state and acks the records, and what failed is sent again until the broker takes it.

Holding is synchronous: the windows a record closed are in the outbox in the same step as the
state that no longer holds them, so no checkpoint can save one without the other, even when the
agent is cancelled (at shutdown) right after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from promptprof.backoff import Backoff

log = structlog.get_logger("promptprof.worker")

RETRY_MAX_S = 5.0


@dataclass(slots=True)
class Outgoing:
    """One record for a Faust topic, and its delivery once sent."""

    topic: Any  # a faust.TopicT (untyped here)
    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] | None = None
    delivery: asyncio.Future[Any] | None = field(default=None, repr=False)

    def send(self) -> None:
        """Start sending: queue the record in Faust's producer and wait for the broker."""
        self.delivery = asyncio.ensure_future(self._send())

    def delivered(self) -> asyncio.Future[Any]:
        """The delivery of the latest send (sending now if the record was never sent)."""
        if self.delivery is None:
            self.send()
        assert self.delivery is not None
        return self.delivery

    async def _send(self) -> Any:
        delivery = await self.topic.send(key=self.key, value=self.value, headers=self.headers)
        return await delivery


class Outbox:
    """Per partition, the records sent since its last checkpoint."""

    def __init__(self) -> None:
        self._sent: dict[int, list[Outgoing]] = {}

    def send(self, partition: int, records: list[Outgoing]) -> None:
        """Start sending ``records``; they are remembered under ``partition`` until :meth:`take`."""
        for record in records:
            record.send()
        self._sent.setdefault(partition, []).extend(records)

    def take(self, partition: int) -> list[Outgoing]:
        """The partition's records sent so far, for :func:`deliver`; forgets them."""
        return self._sent.pop(partition, [])

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's records: its next owner closes their windows again
        from the last checkpoint, which still holds them."""
        self._sent.pop(partition, None)


async def deliver(records: list[Outgoing]) -> None:
    """Wait until every record is delivered, sending the failed ones again with backoff."""
    backoff = Backoff(0.1, RETRY_MAX_S)
    while records:
        results = await asyncio.gather(*(r.delivered() for r in records),
                                       return_exceptions=True)
        errors = [(r, e) for r, e in zip(records, results, strict=True)
                  if isinstance(e, BaseException)]
        failed = [r for r, _ in errors]
        if errors:
            delay = backoff.next()
            log.warning("promptprof.send_retried", records=len(errors), error=repr(errors[0][1]),
                        retry_in_s=delay)
            await asyncio.sleep(delay)
            for record in failed:
                record.send()
        records = failed
