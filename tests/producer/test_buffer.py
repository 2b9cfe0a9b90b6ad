"""The bounded buffer: exact counts, bounded size, FIFO order."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from promptprof.buffer import EventBuffer


@given(capacity=st.integers(1, 50), ops=st.lists(st.integers(0, 7), max_size=200))
def test_counts_are_exact_and_size_bounded(capacity: int, ops: list[int]) -> None:
    buffer = EventBuffer(capacity)
    puts = taken = 0
    for op in ops:
        if op == 0:
            taken += len(buffer.take(3))
        else:
            buffer.put(puts)
            puts += 1
        assert len(buffer) <= capacity
    assert buffer.accepted + buffer.dropped_full == puts
    assert buffer.accepted == taken + len(buffer)


def test_drop_newest_keeps_fifo_order() -> None:
    buffer = EventBuffer(3)
    results = [buffer.put(i) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert buffer.take(10) == [0, 1, 2]
    assert buffer.dropped_full == 2


def test_concurrent_puts_are_all_accounted_for() -> None:
    buffer = EventBuffer(1000)
    per_thread, threads = 5000, 4

    def work() -> None:
        for i in range(per_thread):
            buffer.put(i)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert buffer.accepted + buffer.dropped_full == per_thread * threads
    assert len(buffer) <= 1000 + threads
