"""When the sender's next cycle is due."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promptprof._sender import Linger


@given(
    linger_s=st.floats(0.001, 10), batch_max=st.integers(1, 1000),
    last=st.floats(0, 1e6), after=st.floats(0, 20), buffered=st.integers(0, 2000),
)
def test_a_cycle_is_due_a_linger_after_the_last_or_when_a_batch_waits(
    linger_s: float, batch_max: int, last: float, after: float, buffered: int
) -> None:
    linger = Linger(linger_s, batch_max)
    assert linger.remaining(last, buffered) == 0  # nothing taken yet: due at once
    linger.taken(last)
    now = last + after
    remaining = linger.remaining(now, buffered)
    if buffered >= batch_max or now >= last + linger_s:
        assert remaining == 0
    else:
        assert 0 < remaining <= linger_s + 1e-6  # float rounding of last + linger_s
