"""Where the worker's Kafka clients differ from Faust's and aiokafka's defaults.

* Fetch wait. Faust creates its consumer with ``fetch_max_wait_ms=1500`` and no setting to
  change it. A broker that answers a fetch only when the wait is over, rather than when data
  arrives (Tansu, the local default, does), then adds up to that wait to every window's way into
  InfluxDB: measured here, 0.7 s at worst with 1500 ms, 0.04 s with 100 ms. A shorter wait costs
  a few more empty fetches per second, nothing next to the records.
* Rewinding partitions without a commit (:mod:`promptprof_processor.runtime.rewind`).
* No read-offset filter. Faust drops a record below the last offset it delivered, and counts a
  jump above it as acknowledged. After a seek, records of the batch fetched before it still set
  that offset, so the records the seek asked for were dropped, and the partition stalled. The
  agent orders records itself (:mod:`promptprof_processor.runtime.position`), so Faust's filter is
  off.
* Leaving the group in generation 0 (:func:`leave_groups_in_generation_zero`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.transport.drivers import aiokafka as faust_aiokafka

from promptprof_processor.runtime.rewind import RewindingConsumer

log = structlog.get_logger("promptprof.worker")


def worker_consumer(fetch_max_wait_ms: int) -> type[Any]:
    """The worker's Faust consumer class: it rewinds partitions without a commit, and its
    Kafka consumer waits at most ``fetch_max_wait_ms`` per fetch. Assign it to
    ``app.transport.Consumer`` before the app starts."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start(), not yet called
            return consumer

    class Consumer(RewindingConsumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._read_offset = NoReadOffsets()

        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    return Consumer


class NoReadOffsets(MutableMapping[Any, int | None]):
    """Faust's last-delivered offset per partition, never kept: every lookup finds none."""

    def __getitem__(self, tp: Any) -> int | None:
        return None

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        pass

    def __delitem__(self, tp: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


def leave_groups_in_generation_zero() -> None:
    """Make every aiokafka consumer of this process leave its group when it stops in
    generation 0 too.

    aiokafka sends LeaveGroup on stop only from generation 1 on, Kafka's first; Tansu numbers
    its first generation 0. A worker stopped in it stayed in its groups until its session timed
    out, and the join of a worker started meanwhile raced that expiry.
    """
    leave = GroupCoordinator._maybe_leave_group
    if getattr(leave, "in_generation_zero", False):
        return

    async def maybe_leave_group(coordinator: Any) -> None:
        if coordinator.generation == 0 and coordinator._group_instance_id is None:
            try:
                await coordinator._send_req(
                    LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
                )
            except KafkaError as exc:
                log.warning("promptprof.leave_group_failed", group=coordinator.group_id,
                            error=repr(exc))
            else:
                log.info("promptprof.left_group", group=coordinator.group_id, generation=0)
        await leave(coordinator)  # in generation 0 this only resets the generation

    maybe_leave_group.in_generation_zero = True  # type: ignore[attr-defined]
    GroupCoordinator._maybe_leave_group = maybe_leave_group
