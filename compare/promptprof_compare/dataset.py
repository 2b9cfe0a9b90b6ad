"""Bench datasets: JSONL files, one item per line.

Each line is a JSON object::

    {"id": "refund-1", "input": {"customer": "Ana", "message": "..."}, "reference": "...",
     "keywords": ["refund", "5 days"]}

``input`` holds the template variables; ``reference`` (a string or a list of strings) is what
reference-based evaluators compare the output with; ``id`` defaults to ``line-N``. Other fields
are kept for evaluators that name them (``reference_field``) and for custom evaluators.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from promptprof_compare.inputs import InputError, read_text, validate


class DatasetLine(BaseModel):
    """What one dataset line must hold."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str | None = Field(default=None, min_length=1, max_length=256)
    input: dict[str, Any]


@dataclass(frozen=True)
class Item:
    """One dataset item: its id, its line, the template variables and the whole JSON object."""

    id: str
    line: int
    input: Mapping[str, Any]
    data: Mapping[str, Any]

    def field(self, name: str) -> Any:
        """The value of a top-level field of the item's JSON object (``None`` when absent)."""
        return self.data.get(name)


def _parse_line(text: str, number: int, path: Path) -> Item:
    source = f"{path}:{number}"
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InputError(source, "expected a JSON object")
    line = validate(DatasetLine, data, source)
    return Item(line.id or f"line-{number}", number, line.input, data)


def load_dataset(path: Path) -> list[Item]:
    """Read a JSONL dataset; raise :class:`InputError` on a bad line, a repeated id or no item."""
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        item = _parse_line(text, number, path)
        seen = first_line.setdefault(item.id, number)
        if seen != number:
            raise InputError(f"{path}:{number}", f"id {item.id!r} already used on line {seen}")
        items.append(item)
    if not items:
        raise InputError(path, "the dataset is empty (expected one JSON object per line)")
    return items
