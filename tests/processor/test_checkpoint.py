"""The checkpoint format: heads and chunks round-trip, and a restore reads exactly the epochs a
head commits, whatever else the chunk log holds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.runtime.checkpoint import (
    CheckpointError,
    Chunk,
    Head,
    assemble,
    cut,
)

offsets = st.integers(0, 2**62)
integers = st.integers(-(2**63), 2**63 - 1)
documents = st.dictionaries(st.text(max_size=5), integers | st.text(max_size=50), max_size=20)


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**40), offsets, offsets, offsets)
def test_a_head_survives_packing(run: int, epoch: int, nxt: int, base: int, end: int) -> None:
    head = Head(run, epoch, nxt, base, end)
    assert Head.unpack(head.pack()) == head


@pytest.mark.parametrize("value", [None, b"", b"garbage", b'{"format": 99}', b"[1]"])
def test_a_record_of_another_format_is_no_head(value: bytes | None) -> None:
    assert Head.unpack(value) is None


@given(st.integers(0, 2**63 - 1), st.integers(0, 1000), documents, st.integers(1, 64))
def test_a_document_cut_into_chunks_is_assembled_whole(
    run: int, epoch: int, body: dict[str, Any], size: int
) -> None:
    document = {"base": True, **body}
    chunks = cut(run, epoch, document, size)
    assert all(len(c.data) <= size for c in chunks)
    head = Head(run, epoch, 0, 0, len(chunks))
    records = [(i, c.pack()) for i, c in enumerate(reversed(chunks))]
    assert assemble(head, records) == [document]


def log_of(*epochs: tuple[int, int, dict[str, Any]]) -> list[tuple[int, bytes | None]]:
    values = [c.pack() for run, epoch, doc in epochs for c in cut(run, epoch, doc, 8)]
    return list(enumerate(values))


def test_only_the_heads_run_up_to_its_epoch_is_read() -> None:
    records = log_of((1, 0, {"base": True, "v": 0}), (2, 0, {"base": True, "zombie": 1}),
                     (1, 1, {"base": False, "v": 1}), (1, 2, {"base": False, "uncommitted": 2}))
    committed = Head(1, 1, 7, 0, len(records))
    assert assemble(committed, records) == [{"base": True, "v": 0}, {"base": False, "v": 1}]


def test_chunks_outside_the_heads_range_are_not_read() -> None:
    records = log_of((1, 0, {"base": True, "old": 0}), (1, 1, {"base": True, "new": 1}))
    first_of_new = next(o for o, v in records if (c := Chunk.unpack(v)) and c.epoch == 1)
    head = Head(1, 1, 0, first_of_new, len(records))
    assert assemble(head, records) == [{"base": True, "new": 1}]


def test_a_missing_chunk_fails_loudly() -> None:
    records = log_of((1, 0, {"base": True, "v": "x" * 40}))
    with pytest.raises(CheckpointError, match="chunks"):
        assemble(Head(1, 0, 0, 0, len(records)), [*records[:-1], (len(records), None)])


def test_a_head_without_its_base_fails_loudly() -> None:
    records = log_of((1, 0, {"base": False, "v": 1}))
    with pytest.raises(CheckpointError, match="no base"):
        assemble(Head(1, 0, 0, 0, len(records)), records)
