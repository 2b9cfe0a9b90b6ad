"""Reading a range of a partition that Faust skipped, with a consumer of its own.

Around a rebalance Faust now and then delivers a record while some before it never come: it
cleared them from its queues, or its fetcher ran on from where it stood before seeking. Seeking
Faust's consumer back did not bring them reliably (its fetcher kept delivering from where it
was), so the worker reads such a gap itself: a short-lived aiokafka consumer outside any group,
assigned the one partition, from the first missing offset to the record that revealed the gap.
Gaps are rare (a rebalance, a restart), so a consumer per gap costs nothing that matters.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


class GapNotRead(Exception):
    """The range could not be read before the deadline."""


@dataclass(frozen=True, slots=True)
class Gap:
    """The records of ``[start, end)`` that the log has (offsets it lacks were deleted by
    retention, or lost by the broker), and whether the log reaches ``end`` (it does not when
    the record that showed the gap came from a log the broker has since lost)."""

    records: list[tuple[int, bytes | None]]
    complete: bool


async def read_gap(
    client_options: dict[str, Any], topic: str, partition: int, start: int, end: int,
    *, timeout_s: float = 30.0,
) -> Gap:
    """The records at offsets ``start`` to ``end - 1`` of one partition, in order."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=100, max_partition_fetch_bytes=8 * 1_048_576, **client_options,
    )
    try:
        await consumer.start()
        consumer.assign([tp])
        return await asyncio.wait_for(_read(consumer, tp, start, end), timeout_s)
    except TimeoutError as exc:
        raise GapNotRead(f"{topic}:{partition} [{start}, {end}) not read in {timeout_s} s") from exc
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> Gap:
    consumer.seek(tp, start)
    records: list[tuple[int, bytes | None]] = []
    while (position := await consumer.position(tp)) < end:
        batch = await consumer.getmany(tp, timeout_ms=500)
        served = consumer.highwater(tp)  # what the broker serves, as its last fetch answer says
        if not batch and served is not None and position >= served:
            break  # at the end of what the broker serves, before ``end``
        records.extend((record.offset, record.value) for record in batch.get(tp, []))
    complete = await consumer.position(tp) >= end
    in_range = {offset: value for offset, value in records if start <= offset < end}
    return Gap(sorted(in_range.items()), complete)
