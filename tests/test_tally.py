"""The per-window tally: losses and duplicates are summed apart and never net out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promptprof_tools.tally import tally_windows

windows = st.dictionaries(st.tuples(st.sampled_from("abc"), st.integers(0, 5)),
                          st.integers(0, 50), max_size=12)


def test_a_loss_does_not_hide_behind_a_duplicate() -> None:
    tally = tally_windows({("a", 0): 10, ("a", 1): 10}, {("a", 0): 7, ("a", 1): 13})
    assert (tally.sent, tally.counted) == (20, 20)
    assert (tally.lost, tally.duplicated, tally.wrong_windows) == (3, 3, 2)
    assert not tally.exact


def test_missing_and_extra_windows() -> None:
    tally = tally_windows({("a", 0): 4}, {("b", 0): 2})
    assert (tally.lost, tally.duplicated, tally.windows) == (4, 2, 2)


@given(windows, windows)
def test_the_net_is_duplicated_minus_lost(sent: dict[tuple[str, int], int],
                                          counted: dict[tuple[str, int], int]) -> None:
    tally = tally_windows(sent, counted)
    assert tally.duplicated - tally.lost == tally.counted - tally.sent
    assert tally.lost >= 0 and tally.duplicated >= 0
    assert tally.exact == all(sent.get(k, 0) == counted.get(k, 0) for k in {*sent, *counted})


@given(windows)
def test_exact_counts_are_exact(sent: dict[tuple[str, int], int]) -> None:
    tally = tally_windows(sent, dict(sent))
    assert tally.exact and (tally.lost, tally.duplicated) == (0, 0)
