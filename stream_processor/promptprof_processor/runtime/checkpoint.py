"""A partition's checkpoint in records of bounded size, written incrementally, restored exactly.

Two topics, partitioned like the calls topic, hold each calls partition's checkpoints:

* the chunk log: every checkpoint (an *epoch*) is one document, the state that changed since the
  run's previous epoch, cut into records of at most :data:`CHUNK_BYTES`. A *run* is one worker's
  ownership of a partition: its first epoch is a *base*, the whole state; later epochs hold only
  what changed. When the epochs since the base have written more than the base itself, the run
  writes a new base, so a restore reads at most about twice the state.
* the head log: one small record per epoch, written after the epoch's chunks are all on the
  broker. The newest head is the checkpoint: its run, its epoch, the calls offset its state
  reaches, and the range of the chunk log that holds the run's base and the epochs after it.

A restore reads the newest head, then that range, and keeps only the chunks of the head's run up
to its epoch: the chunks of an epoch a crashed worker never committed, and the late chunks of a
worker whose partition has moved on, belong to another run or to a later epoch and are skipped.
No record grows with the number of series; a restore never sees half a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

FORMAT = 1
CHUNK_BYTES = 512 * 1024
_CHUNK_MAGIC = b"PPC1"
_CHUNK_HEADER = len(_CHUNK_MAGIC) + 8 + 8 + 4 + 4  # run, epoch, index, count


class CheckpointError(RuntimeError):
    """A checkpoint whose records cannot give back the state its head promises."""


@dataclass(frozen=True, slots=True)
class Head:
    """The committed checkpoint of a partition: the state of ``run`` up to ``epoch`` holds
    every record before ``next_offset``; its chunks lie in ``[base_offset, end_offset)``."""

    run: int
    epoch: int
    next_offset: int
    base_offset: int
    end_offset: int

    def pack(self) -> bytes:
        """The head as one record value."""
        return orjson.dumps({"format": FORMAT, "run": self.run, "epoch": self.epoch,
                             "next_offset": self.next_offset, "base_offset": self.base_offset,
                             "end_offset": self.end_offset})

    @classmethod
    def unpack(cls, value: bytes | None) -> Head | None:
        """The head of a :meth:`pack` value; None for a record of another format."""
        try:
            doc = orjson.loads(value or b"")
            if doc.get("format") != FORMAT:
                return None
            return cls(doc["run"], doc["epoch"], doc["next_offset"], doc["base_offset"],
                       doc["end_offset"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One record of an epoch's document: part ``index`` of ``count``."""

    run: int
    epoch: int
    index: int
    count: int
    data: bytes

    def pack(self) -> bytes:
        """The chunk as one record value."""
        return (_CHUNK_MAGIC + self.run.to_bytes(8, "big") + self.epoch.to_bytes(8, "big")
                + self.index.to_bytes(4, "big") + self.count.to_bytes(4, "big") + self.data)

    @classmethod
    def unpack(cls, value: bytes | None) -> Chunk | None:
        """The chunk of a :meth:`pack` value; None for a record of another format."""
        if not value or len(value) < _CHUNK_HEADER or not value.startswith(_CHUNK_MAGIC):
            return None
        at = len(_CHUNK_MAGIC)
        run, epoch, index, count = (int.from_bytes(value[at + i : at + j], "big")
                                    for i, j in ((0, 8), (8, 16), (16, 20), (20, 24)))
        return cls(run, epoch, index, count, value[_CHUNK_HEADER:])


def cut(run: int, epoch: int, document: dict[str, Any], size: int = CHUNK_BYTES) -> list[Chunk]:
    """An epoch's document as chunks of at most ``size`` bytes of data each."""
    data = orjson.dumps(document)
    parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [Chunk(run, epoch, i, len(parts), part) for i, part in enumerate(parts)]


def assemble(head: Head, records: Iterable[tuple[int, bytes | None]]) -> list[dict[str, Any]]:
    """The documents of ``head``'s run from its base up to its epoch, in epoch order, out of
    the chunk log's ``(offset, value)`` records in ``[head.base_offset, head.end_offset)``.

    Raises :class:`CheckpointError` when an epoch the head covers is missing a chunk.
    """
    parts: dict[int, dict[int, Chunk]] = {}
    for offset, value in records:
        chunk = Chunk.unpack(value)
        if (chunk is None or chunk.run != head.run or chunk.epoch > head.epoch
                or not head.base_offset <= offset < head.end_offset):
            continue
        parts.setdefault(chunk.epoch, {})[chunk.index] = chunk
    documents = []
    for epoch in sorted(parts):
        chunks = parts[epoch]
        count = next(iter(chunks.values())).count
        if len(chunks) != count:
            raise CheckpointError(
                f"epoch {epoch} of run {head.run:x}: {len(chunks)} of {count} chunks")
        documents.append(orjson.loads(b"".join(chunks[i].data for i in range(count))))
    if not documents or not documents[0].get("base") or max(parts) != head.epoch:
        raise CheckpointError(f"run {head.run:x}: no base, or epoch {head.epoch} missing")
    return documents
