"""The records a worker produces (closed windows, dead letters), held until the broker has them.

Faust's ``topic.send()`` only queues a record; a delivery that fails is logged by Faust and
forgotten. Tansu answers produce requests with UnknownError for a while after a restart, which
lost windows that way. The worker's checkpoint waits for :func:`deliver` before it saves the
state and acks the records, and what failed is sent again until the broker takes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("promptprof.worker")

RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record for a Faust topic."""

    topic: Any  # a faust.TopicT (untyped here)
    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] | None = None

    async def send(self) -> Awaitable[Any]:
        """Queue the record in Faust's producer; the result is its delivery."""
        delivery: Awaitable[Any] = await self.topic.send(
            key=self.key, value=self.value, headers=self.headers
        )
        return delivery


Sent = tuple[Outgoing, Awaitable[Any]]


class Outbox:
    """Per partition, the records sent since its last checkpoint."""

    def __init__(self) -> None:
        self._sent: dict[int, list[Sent]] = {}

    async def send(self, partition: int, record: Outgoing) -> None:
        """Queue ``record``, remembered under ``partition`` until :meth:`take`."""
        delivery = await record.send()
        # looked up after the await: a checkpoint may have taken the list meanwhile
        self._sent.setdefault(partition, []).append((record, delivery))

    def take(self, partition: int) -> list[Sent]:
        """The partition's records sent so far, for :func:`deliver`; forgets them."""
        return self._sent.pop(partition, [])

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's records: its next owner closes their windows again
        from the last checkpoint, which still holds them."""
        self._sent.pop(partition, None)


async def deliver(sent: list[Sent]) -> None:
    """Wait until every record is delivered, sending the failed ones again with backoff."""
    delay = 0.1
    while sent:
        results = await asyncio.gather(*(d for _, d in sent), return_exceptions=True)
        failed = [(r, e) for (r, _), e in zip(sent, results, strict=True)
                  if isinstance(e, BaseException)]
        if failed:
            log.warning("promptprof.send_retried", records=len(failed), error=repr(failed[0][1]),
                        retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        sent = [(record, await record.send()) for record, _ in failed]
