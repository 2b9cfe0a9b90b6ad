"""The worker's Kafka consumer takes its fetch wait from the settings, not Faust's 1500 ms;
its checkpoint value holds the window and the alert state in one record."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptprof_processor.app import build_app, pack_checkpoint, unpack_checkpoint
from promptprof_processor.settings import ProcessorSettings


@pytest.mark.parametrize("wait_ms", [100, 7])
async def test_the_worker_consumer_waits_as_configured(tmp_path: Path, wait_ms: int) -> None:
    worker = {"fetch_max_wait_ms": wait_ms, "data_dir": str(tmp_path)}
    app = build_app(ProcessorSettings.model_validate({"worker": worker}))
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == wait_ms
    finally:
        await consumer.stop()


@given(st.binary(), st.binary())
def test_a_checkpoint_value_holds_both_states(windows: bytes, alerts: bytes) -> None:
    assert unpack_checkpoint(pack_checkpoint(windows, alerts)) == (windows, alerts)


@pytest.mark.parametrize("value", [None, b"", b'{"format": 1}', b"\x02\x00"])
def test_no_or_another_checkpoint_format_starts_empty(value: bytes | None) -> None:
    assert unpack_checkpoint(value) == (None, None)
