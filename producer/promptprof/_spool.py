"""A bounded, append-only disk spool for envelopes the sender could not deliver in time.

Layout under ``spool_dir``: segment files ``seg-<n>.log`` (n increasing), a ``cursor`` file and a
``lock`` file (``flock``: one process per spool; a second one runs without a spool).

Frame (big endian)::

    length u32 | crc32 u32 | written_at f64 | events u32 | key_len u16 | key | value

``length`` counts the bytes after the crc; the crc covers those same bytes. Each :meth:`append`
writes its frames with one ``write`` and one ``fsync``: once it returns, the records survive a
crash. A crash during an append leaves a torn tail (a short or crc-failing frame): at open it is
detected, counted in ``corrupt_frames`` and cut off, so it is never replayed.

The cursor (segment, offset) names the first record not yet acknowledged by Kafka. It is
written to ``cursor.tmp``, fsynced and renamed over ``cursor`` after each acknowledged replay
batch, so a restart replays from it. A record acknowledged but not yet covered by a cursor write
when the process dies is sent again: that window is one replay batch.

Guarantees:

- A record :meth:`append` returned for is on disk (fsync) and is replayed exactly once, in
  append order, unless the process dies between Kafka's acknowledgement of its replay batch and
  the cursor write after it (about 5 ms: one small file, fsync, rename, directory fsync); then
  that batch (at most ``CYCLE_BATCHES`` records) is sent again by the next process.
- A torn or corrupt frame is never replayed: it is counted and everything after it in that
  segment is cut off (a torn tail can only be the last frame of an append that never returned).
- Size: ``max_bytes`` caps the segment files, consumed records included until their segment is
  deleted (segments are ``max_bytes / 8``, 16 KiB to 16 MiB). A record that does not fit, or a
  write error such as ENOSPC (the partial frame is cut back), leaves it with the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct(">II")  # length, crc32
META = struct.Struct(">dIH")  # written_at, events, key_len
MAX_FRAME = 64 * 1024 * 1024
CURSOR = struct.Struct(">QQI")  # segment, offset, crc32 of the first 16 bytes


class SpoolLocked(RuntimeError):
    """Another process holds the spool directory."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back from the spool; ``segment``/``offset`` locate its frame."""

    segment: int
    offset: int
    end: int
    key: bytes
    value: bytes
    events: int
    written_at: float

    @property
    def size(self) -> int:
        """The frame's size on disk."""
        return self.end - self.offset


def encode_frame(key: bytes, value: bytes, events: int, written_at: float) -> bytes:
    """One framed record."""
    body = META.pack(written_at, events, len(key)) + key + value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_frames(data: bytes, start: int = 0) -> tuple[list[tuple[int, int, bytes]], int, bool]:
    """Parse frames from ``data[start:]``: ([(offset, end, body)], valid end, torn tail found)."""
    frames: list[tuple[int, int, bytes]] = []
    pos = start
    size = len(data)
    while pos < size:
        if size - pos < HEADER.size:
            return frames, pos, True
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length < META.size or length > MAX_FRAME or end > size:
            return frames, pos, True
        body = data[pos + HEADER.size : end]
        if zlib.crc32(body) != crc:
            return frames, pos, True
        _, _, key_len = META.unpack_from(body)
        if META.size + key_len > length:
            return frames, pos, True
        frames.append((pos, end, body))
        pos = end
    return frames, pos, False


def _record(segment: int, offset: int, end: int, body: bytes) -> SpoolRecord:
    written_at, events, key_len = META.unpack_from(body)
    key = body[META.size : META.size + key_len]
    return SpoolRecord(segment, offset, end, key, body[META.size + key_len :], events, written_at)


class Spool:
    """Append-only segments of framed records with a persisted read cursor. Not thread-safe:
    the sender thread alone writes and reads it; other threads only read the gauges."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(16 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self._lock_file = open(self.directory / "lock", "a+b")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise SpoolLocked(f"spool {self.directory} is used by another process") from None
        # gauges (read from any thread)
        self.pending_bytes = 0
        self.pending_events = 0
        self.oldest_written_at: float | None = None
        self.corrupt_frames = 0
        self.write_errors = 0
        self._sizes: dict[int, int] = {}  # segment -> valid bytes on disk
        self._events: dict[int, int] = {}  # segment -> events not yet committed
        self._writer: io.FileIO | None = None
        self._write_segment = -1
        self._full_until = 0.0
        self.cursor = self._read_cursor()
        self._recover()

    # -- opening ------------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        found = []
        for path in self.directory.glob("seg-*.log"):
            with contextlib.suppress(ValueError):
                found.append(int(path.stem[4:]))
        return sorted(found)

    def _path(self, segment: int) -> Path:
        return self.directory / f"seg-{segment:012d}.log"

    def _read_cursor(self) -> tuple[int, int]:
        try:
            raw = (self.directory / "cursor").read_bytes()
            segment, offset, crc = CURSOR.unpack(raw)
            if zlib.crc32(raw[:16]) == crc:
                return segment, offset
        except (OSError, struct.error):
            pass
        return 0, 0

    def _recover(self) -> None:
        """Scan the segments from the cursor: count what is pending, cut torn tails off."""
        cur_seg, cur_off = self.cursor
        for segment in self._segments():
            path = self._path(segment)
            if segment < cur_seg:
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            start = cur_off if segment == cur_seg else 0
            if start > len(data):
                start = len(data)
            frames, valid_end, torn = decode_frames(data, start)
            if torn:
                self.corrupt_frames += 1
                with open(path, "r+b") as handle:
                    handle.truncate(valid_end)
                    os.fsync(handle.fileno())
            self._sizes[segment] = valid_end
            self._events[segment] = 0
            for offset, end, body in frames:
                record = _record(segment, offset, end, body)
                self.pending_bytes += record.size
                self.pending_events += record.events
                self._events[segment] += record.events
                if self.oldest_written_at is None:
                    self.oldest_written_at = record.written_at
        segments = sorted(self._sizes)
        if segments and segments[0] > cur_seg:
            self.cursor = (segments[0], 0)
        if not segments:
            self.cursor = (max(cur_seg, 0), 0)

    # -- writing ------------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        """Bytes the segment files take on disk (consumed records included until deleted)."""
        return sum(self._sizes.values())

    @property
    def full(self) -> bool:
        """Whether the last append was refused for want of room (for a second after an error)."""
        return time.monotonic() < self._full_until

    def append(self, records: Sequence[tuple[bytes, bytes, int]]) -> int:
        """Write ``records`` (key, value, events) durably; return how many (a prefix) fit."""
        if not records:
            return 0
        now = time.time()
        frames: list[bytes] = []
        room = self.max_bytes - self.disk_bytes
        for key, value, events in records:
            frame = encode_frame(key, value, events, now)
            if len(frame) > room:
                self._full_until = time.monotonic() + 0.5
                break
            frames.append(frame)
            room -= len(frame)
        if not frames:
            return 0
        writer = self._open_writer()
        before = self._sizes[self._write_segment]
        data = b"".join(frames)
        try:
            view = memoryview(data)
            while view:
                view = view[writer.write(view) or 0 :]
            os.fsync(writer.fileno())
        except OSError:  # a full disk: take the partial frames back, hold the records
            self.write_errors += 1
            self._full_until = time.monotonic() + 1.0
            with contextlib.suppress(OSError):
                os.ftruncate(writer.fileno(), before)
            return 0
        segment = self._write_segment
        self._sizes[segment] = before + len(data)
        written = sum(r[2] for r in records[: len(frames)])
        self._events[segment] = self._events.get(segment, 0) + written
        self.pending_bytes += len(data)
        self.pending_events += written
        if self.oldest_written_at is None:
            self.oldest_written_at = now
        return len(frames)

    def _open_writer(self) -> io.FileIO:
        writer = self._writer
        if writer is not None and self._sizes[self._write_segment] < self.segment_bytes:
            return writer
        if writer is not None:
            writer.close()
        segments = self._segments()
        self._write_segment = max([*segments, self.cursor[0], self._write_segment]) + 1
        if not self._sizes and self.cursor[1] == 0:
            self.cursor = (self._write_segment, 0)
        writer = open(self._path(self._write_segment), "ab", buffering=0)  # noqa: SIM115
        self._fsync_dir()
        self._sizes[self._write_segment] = 0
        self._events[self._write_segment] = 0
        self._writer = writer
        return writer

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------------

    def read(
        self, max_records: int, max_bytes: int = 8 * 1024 * 1024,
        skip: Iterable[tuple[int, int]] = (),
    ) -> list[SpoolRecord]:
        """Up to ``max_records`` records from the cursor on, oldest first, less those in ``skip``
        (their (segment, offset): acknowledged already, beyond the committed cursor)."""
        skipped = set(skip)
        out: list[SpoolRecord] = []
        total = 0
        segment, offset = self.cursor
        for seg in sorted(s for s in self._sizes if s >= segment):
            start = offset if seg == segment else 0
            limit = self._sizes[seg]
            if start >= limit:
                continue
            with open(self._path(seg), "rb") as handle:
                handle.seek(start)
                data = handle.read(limit - start)
            frames, _, torn = decode_frames(data)
            if torn:  # corrupted since written: what follows cannot be framed, skip it
                self.corrupt_frames += 1
                self._sizes[seg] = start + (frames[-1][1] if frames else 0)
            for rel, rel_end, body in frames:
                if (seg, start + rel) in skipped:
                    continue
                record = _record(seg, start + rel, start + rel_end, body)
                out.append(record)
                total += record.size
                if len(out) >= max_records or total >= max_bytes:
                    return out
        return out

    def commit(
        self, records: Sequence[SpoolRecord], advance_to: tuple[int, int] | None = None
    ) -> None:
        """Count ``records`` as acknowledged and move the cursor to ``advance_to`` (default: past
        the last of them), persisting it atomically. Records acknowledged beyond the new cursor
        are the caller's to pass to :meth:`read` as ``skip``."""
        for record in records:
            self.pending_bytes -= record.size
            self.pending_events -= record.events
            self._events[record.segment] = self._events.get(record.segment, 0) - record.events
        target = advance_to
        if target is None and records:
            target = (records[-1].segment, records[-1].end)
        if target is not None and target > self.cursor:
            self._advance(target)

    def _advance(self, cursor: tuple[int, int]) -> None:
        segment, offset = cursor
        if offset >= self._sizes.get(segment, 0) and segment != self._write_segment:
            later = [s for s in self._sizes if s > segment]
            if later:
                segment, offset = min(later), 0
        self.cursor = (segment, offset)
        if self.pending_events <= 0 and self.pending_bytes <= 0:
            self.pending_events = self.pending_bytes = 0
            self.oldest_written_at = None
        else:
            self.oldest_written_at = self._peek_written_at()
        self._write_cursor()
        for seg in [s for s in self._sizes if s < segment]:
            self._path(seg).unlink(missing_ok=True)
            del self._sizes[seg]
            self._events.pop(seg, None)
        if (
            self.pending_bytes == 0
            and segment == self._write_segment
            and offset >= self._sizes.get(segment, 0)
            and self._sizes.get(segment, 0) > 0
        ):
            self._roll_empty()

    def _roll_empty(self) -> None:
        """Everything is consumed: start a fresh segment so the old one can go."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        old = self._write_segment
        self._open_writer()
        self.cursor = (self._write_segment, 0)
        self._write_cursor()
        self._path(old).unlink(missing_ok=True)
        self._sizes.pop(old, None)
        self._events.pop(old, None)

    def _peek_written_at(self) -> float | None:
        segment, offset = self.cursor
        size = self._sizes.get(segment, 0)
        if offset >= size:
            return None
        try:
            with open(self._path(segment), "rb") as handle:
                handle.seek(offset + HEADER.size)
                raw = handle.read(8)
            return float(struct.unpack(">d", raw)[0])
        except (OSError, struct.error):
            return None

    def _write_cursor(self) -> None:
        segment, offset = self.cursor
        head = struct.pack(">QQ", segment, offset)
        tmp = self.directory / "cursor.tmp"
        with open(tmp, "wb") as handle:
            handle.write(head + struct.pack(">I", zlib.crc32(head)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / "cursor")
        self._fsync_dir()

    def oldest_age_s(self) -> float:
        """Seconds since the oldest pending record was spooled; 0 when empty."""
        oldest = self.oldest_written_at
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    def close(self) -> None:
        """Close the files and release the lock."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._lock_file.close()
