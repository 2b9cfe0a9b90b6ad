"""The bounded buffer: exact counts, bounded size, FIFO order."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from promptprof._buffer import ITEM_BYTES, EventBuffer


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


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 3_000)),
        st.tuples(st.just("take"), st.integers(0, 5)),
        st.tuples(st.just("hold"), st.integers(0, 6_000)),
    ),
    max_size=120,
)


@given(max_items=st.integers(1, 30), max_bytes=st.integers(0, 20_000), ops=ops_st)
def test_bytes_stay_within_the_limit_and_every_refusal_has_its_reason(
    max_items: int, max_bytes: int, ops: list[tuple[str, int]]
) -> None:
    buffer = EventBuffer(max_items, max_bytes, sizer=lambda item: int(item))
    puts = 0
    for op, value in ops:
        if op == "put":
            before = (buffer.dropped_full, buffer.dropped_bytes, buffer.held_bytes(), len(buffer))
            accepted = buffer.put_sized(value) if value else buffer.put(value)
            puts += 1
            if accepted:
                assert buffer.held_bytes() <= max_bytes
            elif buffer.dropped_full > before[0]:
                assert before[3] >= max_items
            else:
                assert buffer.dropped_bytes > before[1]
                assert before[2] + ITEM_BYTES + value > max_bytes
        elif op == "take":
            held = buffer.held_bytes()
            buffer.take(value)
            assert buffer.held_bytes() == held  # taken bytes are the sender's until hold()
        else:
            buffer.hold(value)
    assert buffer.accepted + buffer.dropped_full + buffer.dropped_bytes == puts


def test_closed_buffer_refuses_and_counts_every_item() -> None:
    buffer = EventBuffer(10)
    buffer.put(1)
    buffer.close()
    assert not buffer.put(2) and not buffer.put_sized(3)
    assert (buffer.dropped_closed, buffer.take(5)) == (2, [1])
