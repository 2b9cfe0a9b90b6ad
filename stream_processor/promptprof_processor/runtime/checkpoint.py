"""A partition's checkpoint: its window state, its alert state and the offset they reach.

One table value holds all three, so the state a restarted worker restores and the record it
resumes from can never disagree (:mod:`promptprof_processor.runtime.position`).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

log = structlog.get_logger("promptprof.worker")

FORMAT = b"\x03"
_NO_OFFSET = -1
_HEADER = 1 + 8 + 4  # format, next offset, size of the window state


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a partition's aggregation had reached: ``next_offset`` is the first record whose
    calls are not in ``windows``; None fields mean no checkpoint."""

    windows: bytes | None = None
    alerts: bytes | None = None
    next_offset: int | None = None

    def pack(self) -> bytes:
        """The checkpoint as one table value."""
        windows, alerts = self.windows or b"", self.alerts or b""
        offset = _NO_OFFSET if self.next_offset is None else self.next_offset
        return (FORMAT + offset.to_bytes(8, "big", signed=True)
                + len(windows).to_bytes(4, "big") + windows + alerts)

    @classmethod
    def unpack(cls, value: bytes | None) -> Checkpoint:
        """The checkpoint of a :meth:`pack` value; an empty one for none, or for a value of
        another format (with a warning: the partition then starts over)."""
        if not value:
            return cls()
        if value[:1] != FORMAT or len(value) < _HEADER:
            log.warning("promptprof.checkpoint_discarded", reason="unknown checkpoint format")
            return cls()
        offset = int.from_bytes(value[1:9], "big", signed=True)
        size = int.from_bytes(value[9:13], "big")
        return cls(
            windows=value[_HEADER : _HEADER + size] or None,
            alerts=value[_HEADER + size :] or None,
            next_offset=None if offset == _NO_OFFSET else offset,
        )
