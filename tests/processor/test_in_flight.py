"""The worker's count of sends on their way to the broker, and its wait for fewer."""

from __future__ import annotations

import asyncio

from promptprof_processor.runtime.adapter import InFlight


async def test_below_waits_until_enough_sends_are_answered() -> None:
    in_flight = InFlight()
    loop = asyncio.get_running_loop()
    sends = [in_flight.track(loop.create_future()) for _ in range(5)]
    assert in_flight.count == 5
    waiting = asyncio.ensure_future(in_flight.below(3))
    for send in sends[:2]:
        send.set_result(None)
    await asyncio.sleep(0)  # let the callbacks run
    assert in_flight.count == 3 and not waiting.done()
    sends[2].set_exception(RuntimeError("refused"))  # a failed send is answered too
    await asyncio.wait_for(waiting, 1.0)
    assert in_flight.count == 2


async def test_below_returns_at_once_when_few_are_in_flight() -> None:
    in_flight = InFlight()
    in_flight.track(asyncio.get_running_loop().create_future())
    await asyncio.wait_for(in_flight.below(2), 0.1)
