"""A checkpoint value holds the window state, the alert state and the next offset in one record."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.runtime.checkpoint import Checkpoint

states = st.one_of(st.none(), st.binary(min_size=1))


@given(states, states, st.one_of(st.none(), st.integers(0, 2**63 - 1)))
def test_a_checkpoint_survives_packing(
    windows: bytes | None, alerts: bytes | None, next_offset: int | None
) -> None:
    saved = Checkpoint(windows, alerts, next_offset)
    assert Checkpoint.unpack(saved.pack()) == saved


@pytest.mark.parametrize(
    "value", [None, b"", b'{"format": 1}', b"\x02\x00\x00\x00\x01ab", b"\x03\x00"]
)
def test_no_or_another_checkpoint_format_starts_empty(value: bytes | None) -> None:
    assert Checkpoint.unpack(value) == Checkpoint()
