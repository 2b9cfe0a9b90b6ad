"""The disk spool: framing, torn tails, the cursor, the size cap, and the sender around it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptprof import Profiler, Settings, load_settings, profile
from promptprof._envelope import decode_record
from promptprof._spool import Spool, SpoolLocked, decode_frames, encode_frame
from promptprof_tools.stack import TansuBroker, create_topics, free_port

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


# -- against a real Tansu broker ----------------------------------------------------------------


def _create_topic(bootstrap: str) -> None:
    settings: Settings = load_settings(kafka={"bootstrap_servers": bootstrap})
    asyncio.run(create_topics(settings.kafka, [TOPIC], partitions=3))


def _spool_profiler(bootstrap: str, spool_dir: Path, **producer: Any) -> Profiler:
    settings: Settings = load_settings(
        kafka={"bootstrap_servers": bootstrap, "request_timeout_ms": 2000},
        producer={
            "metrics_log_interval_s": 0,
            "linger_ms": 5,
            "retry_backoff_max_ms": 300,
            "spool_dir": str(spool_dir),
            "spool_after_s": 0.5,
            **producer,
        },
    )
    return Profiler(settings)


def _consume_ids(bootstrap: str, expected: int, timeout_s: float = 30.0) -> list[str]:
    """Event ids of the calls topic in log order, until ``expected`` or the deadline
    (then a short grace to catch duplicates beyond it)."""

    async def run() -> list[str]:
        consumer = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            group_id=f"spool-{time.monotonic_ns()}",
        )
        await consumer.start()
        found: list[str] = []
        deadline = time.monotonic() + timeout_s
        grace: float | None = None
        try:
            while time.monotonic() < deadline and (grace is None or time.monotonic() < grace):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        found.extend(e["event_id"] for e in decode_record(record.value))
                if len(found) >= expected and grace is None:
                    grace = time.monotonic() + 1.5
        finally:
            await consumer.stop()
        return found

    return asyncio.run(run())


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A durable broker: what it acked before an outage is still there after its restart."""
    handle = TansuBroker.create(free_port(), tmp_path / "tansu", durable=True)
    handle.start()
    _create_topic(handle.bootstrap)
    yield handle
    handle.stop()


OUTAGE_S = 20.0  # the issue asks for minutes; 20 s keeps the suite short (same code path)


@pytest.mark.integration
def test_outage_spooled_then_replayed_exactly_once(broker: TansuBroker, tmp_path: Path) -> None:
    prof = _spool_profiler(broker.bootstrap, tmp_path / "spool", buffer_size=5000,
                           batch_max_events=100)

    @profile(prompt_id="spooled", profiler=prof)
    def call() -> str:
        return "ok"

    for _ in range(300):
        call()
    assert prof.flush(20) and prof.stats()["sent_events"] == 300
    broker.kill()
    durations: list[int] = []
    end = time.monotonic() + OUTAGE_S
    calls = 300
    max_age = 0.0
    while time.monotonic() < end:
        for _ in range(100):  # ~1,000 calls/s
            start = time.perf_counter_ns()
            call()
            durations.append(time.perf_counter_ns() - start)
        calls += 100
        time.sleep(0.1)
        max_age = max(max_age, prof.stats()["spool_oldest_age_s"])
    during = prof.stats()
    assert during["spooled_events"] > 0 and during["spool_events"] > 0
    assert max_age > OUTAGE_S / 2
    # The broker comes back with its log (the first 300 included) and its topic. A memory
    # broker came back empty, and just after such a restart Tansu now and then serves a
    # partition's offsets twice or not at all (chaos/tansu_restart_probe.py): the reader
    # stopped at the hole, 8,000 of 19,900 read back in 1 run of 5.
    broker.restart()
    _wait_for(lambda: prof.stats()["spool_events"] == 0 and prof.flush(0.1), 60)
    stats = prof.stats()
    assert stats["dropped"] == 0, stats
    assert stats["replayed_events"] == stats["spooled_events"]
    ids = _consume_ids(broker.bootstrap, calls)
    assert len(ids) == calls and len(set(ids)) == len(ids), "lost or duplicated events"
    assert ids == sorted(ids, key=lambda i: int(i[12:], 16)), "replayed out of order"
    durations.sort()
    p99_us = durations[len(durations) * 99 // 100] / 1000
    print(f"outage {OUTAGE_S}s: {calls} calls, spooled {stats['spooled_events']}, "
          f"call p99 {p99_us:.1f} us, max {durations[-1] / 1000:.0f} us")
    assert p99_us < 1000, "the host's calls were slowed"
    assert prof.close(5)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import structlog
    from promptprof import Settings, load_settings
    from promptprof import Profiler, profile

    # logs (the producer's threads log while the broker is away) to stderr: stdout is the report
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))

    mode, bootstrap, spool, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    settings = load_settings(
        kafka={"bootstrap_servers": bootstrap, "request_timeout_ms": 2000},
        producer={"metrics_log_interval_s": 0, "linger_ms": 5, "retry_backoff_max_ms": 300,
                  "spool_dir": spool, "spool_after_s": 0.2, "batch_max_events": 50,
                  "buffer_size": 20000},
    )
    prof = Profiler(settings)

    @profile(prompt_id=f"kill-{mode}", profiler=prof)
    def call():
        return None

    if mode == "spool":
        while True:
            for _ in range(200):
                call()
            time.sleep(0.01)
            print("SPOOLED", prof.stats()["spooled_events"], flush=True)
    call()  # starts the sender, which replays the spool before this event
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = prof.stats()
        if stats["replayed_events"] >= expected and prof.flush(0.1):
            break
        time.sleep(0.05)
    print("STATS", json.dumps(prof.stats()), flush=True)
    sys.exit(0 if prof.close(10) else 3)
    """
)


@pytest.mark.integration
def test_killed_mid_spool_then_a_new_process_replays_exactly_once(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spool_dir = tmp_path / "spool"
    dead = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), "spool", dead, str(spool_dir), "0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout is not None
    reported = 0
    deadline = time.monotonic() + 60
    for line in child.stdout:
        if line.startswith("SPOOLED"):
            reported = int(line.split()[1])
        if reported >= 5000 or time.monotonic() > deadline:
            break
    child.kill()  # SIGKILL, mid-spool: appends are running all the time
    for line in child.stdout:  # what it reported as spooled before it died
        if line.startswith("SPOOLED"):
            reported = int(line.split()[1])
    child.wait()
    assert reported >= 5000
    spool = Spool(spool_dir, 256 * 1024 * 1024)
    on_disk, corrupt = spool.pending_events, spool.corrupt_frames
    spool.close()
    assert on_disk >= reported, "events reported as spooled were lost"
    broker = TansuBroker(free_port(), tmp_path / "tansu")
    broker.start()
    try:
        _create_topic(broker.bootstrap)
        replay = subprocess.run(
            [sys.executable, str(script), "replay", broker.bootstrap, str(spool_dir),
             str(on_disk)],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert replay.returncode == 0, replay.stderr[-2000:]
        line = next(x for x in replay.stdout.splitlines() if x.startswith("STATS"))
        stats = json.loads(line[6:])
        assert stats["replayed_events"] in (on_disk, on_disk + 1)  # + its own call, spooled behind
        assert stats["dropped"] == 0
        ids = _consume_ids(broker.bootstrap, on_disk + 1)
        assert len(ids) == on_disk + 1 and len(set(ids)) == len(ids), "lost or duplicated"
        print(f"killed child: reported {reported}, on disk {on_disk}, torn tails {corrupt}")
    finally:
        broker.stop()


@pytest.mark.integration
def test_full_spool_counts_drops_and_keeps_the_host_fast(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    dead = f"127.0.0.1:{free_port()}"
    prof = _spool_profiler(dead, spool_dir, spool_max_bytes=64 * 1024, buffer_size=1000,
                           batch_max_events=50, spool_after_s=0.2)

    @profile(prompt_id="full", profiler=prof)
    def call() -> str:
        return "ok"

    worst = 0
    for _ in range(60):
        for _ in range(500):
            start = time.perf_counter_ns()
            call()
            worst = max(worst, time.perf_counter_ns() - start)
        time.sleep(0.05)
    _wait_for(lambda: prof.stats()["spooled_events"] > 0)
    prof.close(2)  # False: what the full spool refuses is lost, and counted
    stats = prof.stats()
    assert stats["spool_bytes"] <= 64 * 1024
    assert stats["dropped_buffer_full"] > 0
    assert stats["recorded"] == 30_000
    assert stats["spooled_events"] + stats["dropped"] == 30_000, stats
    assert worst < 50_000_000, "a call was slowed by the full spool"
    broker = TansuBroker(free_port(), tmp_path / "tansu")
    broker.start()
    try:
        _create_topic(broker.bootstrap)
        again = _spool_profiler(broker.bootstrap, spool_dir)
        profile(prompt_id="after", profiler=again)(lambda: None)()
        _wait_for(lambda: again.stats()["replayed_events"] >= stats["spooled_events"], 60)
        assert again.close(10)
        ids = _consume_ids(broker.bootstrap, stats["spooled_events"] + 1)
        assert len(ids) == stats["spooled_events"] + 1 and len(set(ids)) == len(ids)
    finally:
        broker.stop()


def test_a_write_error_such_as_enospc_holds_the_records_and_leaves_no_partial_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, 1_000_000)
    spool.append([(b"k", b"first", 1)])

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("promptprof._spool.os.fsync", no_space)
    assert spool.append([(b"k", b"second" * 100, 2)]) == 0
    assert spool.write_errors == 1 and spool.full and spool.pending_events == 1
    monkeypatch.undo()
    segment = next(tmp_path.glob("seg-*.log"))
    assert decode_frames(segment.read_bytes())[2] is False  # the partial write was cut back
    assert spool.append([(b"k", b"third", 3)]) == 1
    assert _drain(spool) == [(b"k", b"first", 1), (b"k", b"third", 3)]


@pytest.mark.integration
def test_close_with_kafka_down_spools_everything_and_returns_true(tmp_path: Path) -> None:
    prof = _spool_profiler(f"127.0.0.1:{free_port()}", tmp_path / "spool", spool_after_s=60)

    @profile(prompt_id="closing", profiler=prof)
    def call() -> None:
        return None

    for _ in range(5000):
        call()
    _wait_for(lambda: prof.stats()["connect_failures"] >= 1)
    start = time.monotonic()
    assert prof.close(5), prof.stats()  # nothing lost: it is on disk
    took = time.monotonic() - start
    stats = prof.stats()
    assert stats["spooled_events"] == 5000 and stats["dropped"] == 0
    assert took < 3, f"close took {took:.1f}s"
    spool = Spool(tmp_path / "spool", 1 << 30)
    assert spool.pending_events == 5000
    spool.close()
