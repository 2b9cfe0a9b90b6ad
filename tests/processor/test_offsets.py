"""The set of aggregated offsets behaves as a set, in as few ranges as its contents allow."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.offsets import HandledOffsets


@given(st.lists(st.integers(0, 60), max_size=80), st.integers(0, 61))
def test_membership_is_that_of_a_set(added: list[int], probe: int) -> None:
    handled = HandledOffsets()
    for offset in added:
        handled.add(offset)
    assert (probe in handled) == (probe in set(added))
    ranges = handled.ranges()
    assert [o for start, end in ranges for o in range(start, end)] == sorted(set(added))
    assert all(a_end < b_start for (_, a_end), (b_start, _) in pairwise(ranges))


def test_offsets_in_order_are_one_range_and_a_redelivery_is_recognised() -> None:
    handled = HandledOffsets()
    for offset in [*range(5, 100), 200]:
        handled.add(offset)
    assert handled.ranges() == [(5, 100), (200, 201)]
    assert 99 in handled and 100 not in handled and 4 not in handled
