"""The disk spool: framing, torn tails, the cursor, the size cap, and the sender around it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptprof.spool import Spool, SpoolLocked, decode_frames, encode_frame

TOPIC = "llm.calls"
records_st = st.lists(
    st.tuples(st.binary(min_size=0, max_size=40), st.binary(min_size=0, max_size=300),
              st.integers(min_value=1, max_value=1000)),
    min_size=1, max_size=30,
)


def _drain(spool: Spool, batch: int = 7) -> list[tuple[bytes, bytes, int]]:
    out: list[tuple[bytes, bytes, int]] = []
    while True:
        records = spool.read(batch)
        if not records:
            return out
        out.extend((r.key, r.value, r.events) for r in records)
        spool.commit(records)


# -- unit and property tests ------------------------------------------------------------------


@given(records_st)
def test_frames_round_trip(records: list[tuple[bytes, bytes, int]]) -> None:
    data = b"".join(encode_frame(k, v, n, 1.5) for k, v, n in records)
    frames, end, torn = decode_frames(data)
    assert not torn and end == len(data) and len(frames) == len(records)


@given(records_st, st.data())
def test_a_torn_or_flipped_tail_is_detected_never_decoded(
    records: list[tuple[bytes, bytes, int]], data: st.DataObject
) -> None:
    frames = [encode_frame(k, v, n, 1.5) for k, v, n in records]
    whole = b"".join(frames[:-1])
    last = frames[-1]
    cut = data.draw(st.integers(min_value=1, max_value=len(last) - 1))
    decoded, end, torn = decode_frames(whole + last[:cut])
    assert torn and end == len(whole) and len(decoded) == len(records) - 1
    flip = data.draw(st.integers(min_value=0, max_value=len(last) - 1))
    bad = bytearray(last)
    bad[flip] ^= 0xFF
    decoded, end, torn = decode_frames(whole + bytes(bad))
    assert torn and len(decoded) == len(records) - 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records_st, st.integers(min_value=1, max_value=5), st.data())
def test_reopen_replays_from_the_committed_cursor_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, records: list[tuple[bytes, bytes, int]],
    chunks: int, data: st.DataObject,
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, 10_000_000, segment_bytes=512)
    for i in range(chunks):
        assert spool.append(records[i::chunks]) == len(records[i::chunks])
    order = [r for i in range(chunks) for r in records[i::chunks]]
    done = data.draw(st.integers(min_value=0, max_value=len(order)))
    taken = spool.read(done) if done else []
    spool.commit(taken)
    assert spool.pending_events == sum(r[2] for r in order[done:])
    spool.close()
    again = Spool(directory, 10_000_000, segment_bytes=512)
    assert again.pending_events == sum(r[2] for r in order[done:])
    assert _drain(again) == order[done:]
    assert again.pending_bytes == 0 and again.oldest_age_s() == 0.0
    again.close()
    assert _drain(Spool(directory, 10_000_000)) == []


def test_a_torn_tail_at_open_is_counted_and_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000)
    spool.append([(b"k", b"v" * 100, 3), (b"k", b"w" * 100, 4)])
    spool.close()
    segment = next(tmp_path.glob("seg-*.log"))
    with open(segment, "ab") as handle:
        handle.write(encode_frame(b"k", b"half" * 50, 9, 1.0)[:37])
    again = Spool(tmp_path, 1_000_000)
    assert again.corrupt_frames == 1 and again.pending_events == 7
    assert _drain(again) == [(b"k", b"v" * 100, 3), (b"k", b"w" * 100, 4)]
    again.close()


def test_full_spool_refuses_the_newest_and_frees_room_after_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 3_000, segment_bytes=1_000)
    record = (b"key", b"x" * 480, 1)
    written = spool.append([record] * 10)
    assert 0 < written < 10 and spool.full
    assert spool.disk_bytes <= 3_000
    _drain(spool)
    assert spool.append([record] * 2) == 2


def test_one_process_per_spool_dir(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path, 1_000_000)
    spool.close()
    Spool(tmp_path, 1_000_000).close()


def test_replay_skips_records_acked_beyond_the_cursor(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000)
    spool.append([(b"a", b"1", 1), (b"a", b"2", 1), (b"a", b"3", 1)])
    first, second, third = spool.read(10)
    again = spool.read(10, skip=[(second.segment, second.offset)])
    assert [r.value for r in again] == [b"1", b"3"]
    spool.commit([first, second, third])
    assert spool.read(10) == [] and spool.pending_events == 0
