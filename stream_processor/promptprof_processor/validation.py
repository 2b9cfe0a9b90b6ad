"""Validation of raw events (decoded from an envelope) into call and quality events.

The whole batch is validated in one pydantic-core call, through a :class:`pydantic.TypeAdapter`
over a list of the tagged union of :class:`~promptprof.event.CallEvent` and
:class:`~promptprof.event.QualityEvent` (an event with ``"kind": "quality"`` is a quality event,
any other a call event). One call per batch costs less than one call per event, and the tag
spares pydantic from trying both models. When the batch holds bad events, they are split off
with their reasons and the rest is validated again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from promptprof.event import CallEvent, QualityEvent

Event = CallEvent | QualityEvent
MAX_REASONS = 3


def _kind(raw: Any) -> str:
    return "quality" if isinstance(raw, dict) and raw.get("kind") == "quality" else "call"


_batch: TypeAdapter[list[Event]] = TypeAdapter(
    list[
        Annotated[
            Annotated[CallEvent, Tag("call")] | Annotated[QualityEvent, Tag("quality")],
            Discriminator(_kind),
        ]
    ]
)


def validate_events(raw_events: Sequence[Any]) -> tuple[list[Event], list[tuple[Any, str]]]:
    """Split raw events into validated events and ``(raw, reason)`` pairs, keeping order."""
    raws = list(raw_events)
    try:
        return _batch.validate_python(raws), []
    except ValidationError as exc:
        reasons = _reasons_by_index(exc.errors(include_url=False, include_input=False))
    good, bad = validate_events([r for i, r in enumerate(raws) if i not in reasons])
    bad.extend((raws[i], reason) for i, reason in sorted(reasons.items()))
    return good, bad


def _reasons_by_index(errors: list[ErrorDetails]) -> dict[int, str]:
    messages: dict[int, list[str]] = {}
    for error in errors:
        # loc is (item index, union tag, field...)
        index, _, *path = (*error["loc"], None)
        field = ".".join(str(p) for p in path if p is not None) or "event"
        messages.setdefault(int(index), []).append(f"{field}: {error['msg']}")
    return {i: "; ".join(m[:MAX_REASONS]) for i, m in messages.items()}
