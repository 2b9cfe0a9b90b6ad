"""A partition's position takes the next record, skips the ones before it and marks the ones
after it as ahead (records missing)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.runtime.position import PartitionCursors, Verdict


@given(st.lists(st.integers(0, 40), max_size=200), st.integers(0, 40))
def test_any_delivery_order_aggregates_each_offset_once_and_in_order(
    delivered: list[int], start: int
) -> None:
    cursors = PartitionCursors()
    cursors.start(0, start)
    taken = []
    for offset in delivered:
        if cursors.judge(0, offset) is Verdict.TAKE:
            cursors.taken(0, offset)
            taken.append(offset)
    assert taken == list(range(start, start + len(taken)))
    assert cursors.next_offset(0) == start + len(taken)


def test_a_redelivery_is_seen_and_a_jump_is_ahead() -> None:
    cursors = PartitionCursors()
    cursors.start(3, 10)
    assert [cursors.judge(3, o) for o in (9, 10, 11)] == [Verdict.SEEN, Verdict.TAKE,
                                                           Verdict.AHEAD]


def test_records_gone_from_the_log_are_skipped_and_counted() -> None:
    cursors = PartitionCursors()
    cursors.start(0, 5)
    assert cursors.skip_to(0, 12) == 7
    assert cursors.next_offset(0) == 12
    assert cursors.skip_to(0, 3) == 0
    assert cursors.next_offset(0) == 12
