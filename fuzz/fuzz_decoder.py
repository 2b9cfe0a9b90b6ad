"""Atheris harness: the worker's record path (decode_record, validate_events, the windows).

Run by hand (not part of the test suite), e.g. for ten minutes::

    .venv/bin/python fuzz/fuzz_decoder.py -max_total_time=600 -dict=fuzz/event.dict \
        fuzz/corpus/decoder

An empty corpus directory given as the last argument is first seeded with valid envelopes.

Any exception, and any dead letter for an internal error (the worker turns an unexpected
exception into one rather than stop), is a finding.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _harness import fuzz

from promptprof._envelope import EnvelopeError, decode_record
from promptprof_processor.ingest.records import RecordReader
from promptprof_processor.ingest.validation import validate_events
from promptprof_processor.runtime.partition import Clock, PartitionRun
from promptprof_processor.settings import WindowSettings

RUN = PartitionRun(0, WindowSettings(), next_offset=0,
                   reader=RecordReader(WindowSettings(), max_record_bytes=1 << 16))


def test_one_input(data: bytes) -> None:
    try:
        events = decode_record(data)
    except EnvelopeError:
        events = []
    validate_events(events)
    for output in RUN.take(RUN.next_offset, data, Clock(time.time_ns(), time.monotonic())):
        letter = output.rejected
        if letter is None:
            continue
        assert isinstance(letter.reason, str) and letter.reason
        assert not letter.reason.startswith("internal error"), letter.reason


def _seed(directory: Path) -> None:
    """Valid records to start from: random bytes seldom become JSON, let alone an envelope."""
    from promptprof import Call
    from promptprof._envelope import encode_envelope
    from promptprof._profiler import make_spec
    from promptprof._record import EventBuilder

    builder = EventBuilder("svc", "dev", False, None)
    events = []
    for i in range(4):
        call = Call(None, make_spec(f"p{i}", "v1", model="gpt-4o", provider="openai"), 1.0)
        call.set_usage(10, 5)
        call.end_ns = call.start_ns + 1_000_000
        if i == 1:
            call.set_error("Timeout")
        events.append(builder.build(call))
    for i in range(1, 5):
        (directory / f"seed-{i}").write_bytes(encode_envelope(events[:i]))


def main() -> None:
    corpus = Path(sys.argv[-1]) if len(sys.argv) > 1 else None
    if corpus is not None and corpus.is_dir() and not any(corpus.iterdir()):
        _seed(corpus)
    fuzz(test_one_input)


if __name__ == "__main__":
    main()
