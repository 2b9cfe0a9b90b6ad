"""The worker's Kafka consumer takes its fetch wait from the settings, not Faust's 1500 ms."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.types import TP

from promptprof_processor.runtime.worker import build_app
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


async def test_the_worker_consumer_keeps_no_read_offsets(tmp_path: Path) -> None:
    # The agent orders records itself; Faust's filter would drop what a seek asked for again.
    app = build_app(ProcessorSettings.model_validate({"worker": {"data_dir": str(tmp_path)}}))
    read_offsets = app.consumer._read_offset
    read_offsets[TP("calls", 0)] = 500
    read_offsets.update({TP("calls", 1): 7})
    assert read_offsets[TP("calls", 0)] is None and read_offsets[TP("calls", 1)] is None
    assert read_offsets.pop(TP("calls", 0), None) is None and len(read_offsets) == 0
