"""The call orders of ``promptprof ci``: every call once, pairs side by side, shuffled by seed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promptprof_compare.order import BASE, CANDIDATE, blocked_order, call_order, sequential_order

keys = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), max_size=60)


@given(base=keys, candidate=keys, seed=st.integers(0, 2**32))
def test_blocked_order_makes_every_call_once(
    base: list[tuple[str, int]], candidate: list[tuple[str, int]], seed: int
) -> None:
    order = blocked_order(base, candidate, seed)
    expected = [(BASE, i) for i in range(len(base))] + [
        (CANDIDATE, i) for i in range(len(candidate))
    ]
    assert sorted(order) == expected
    assert order == blocked_order(base, candidate, seed)


@given(
    calls=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 50)), unique=True, max_size=80),
    seed=st.integers(0, 2**32),
)
def test_matching_calls_run_side_by_side(calls: list[tuple[str, int]], seed: int) -> None:
    """With the same keys on both sides, each block is one base and one candidate call."""
    order = blocked_order(calls, list(reversed(calls)), seed)
    for first, second in zip(order[::2], order[1::2], strict=True):
        assert {first[0], second[0]} == {BASE, CANDIDATE}
        sides = {first[0]: first[1], second[0]: second[1]}
        assert calls[sides[BASE]] == list(reversed(calls))[sides[CANDIDATE]]
    prefix_balance = [
        sum(1 if side == CANDIDATE else -1 for side, _ in order[:end]) for end in range(len(order))
    ]
    assert all(abs(balance) <= 1 for balance in prefix_balance)


def test_seeds_shuffle_differently_and_sequential_keeps_the_old_order() -> None:
    calls = list(range(40))
    assert blocked_order(calls, calls, 1) != blocked_order(calls, calls, 2)
    assert call_order("sequential", calls, calls[:3], 1) == sequential_order(calls, calls[:3])
    assert sequential_order(calls[:2], calls[:1]) == [(BASE, 0), (BASE, 1), (CANDIDATE, 0)]
