"""Validation of raw events (decoded from an envelope) into call and quality records.

The contract is :class:`~promptprof._event.CallEvent` and :class:`~promptprof._event.QualityEvent`
(an event with ``"kind": "quality"`` is a quality event, any other a call event). On the hot path
the processor does not build those models: it validates into plain dicts, :class:`CallRecord`
and :class:`QualityRecord`, keyed by the models' field names (``latency_ms``, not
``promptprof.latency_ms``) with every default filled in. Their validators are derived from the
models' own fields (types, constraints, aliases, defaults, config), so the same events are
accepted; building a dict costs about half of building a model.

A columnar envelope (:class:`~promptprof._envelope.ColumnBatch`) is validated into
:class:`CallColumns` in one pydantic-core call: a validator per *shape* (which keys the batch
has, each a column or a value the events share) checks each column's values with the field's
own constraints, and a shared value once. The contract has no
rule across fields, so this accepts exactly what validating each event would. A batch with any
bad value takes the row path below, which finds the bad events and their reasons.

The whole batch is validated in one pydantic-core call (one call per batch costs less than one
call per event). A batch without quality events, the usual one, is validated as a list of call
records, which spares the per-event discriminator callable. When the batch holds bad events,
they are split off with their reasons, which come from validating those events against the
models themselves (same texts as the models give), and the rest is validated again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from promptprof._envelope import ColumnBatch
from promptprof._event import CallEvent, QualityEvent, Status

MAX_REASONS = 3


class CallRecord(TypedDict):
    """A validated call event: :class:`~promptprof._event.CallEvent`'s fields as a dict."""

    schema_version: Literal[1]
    event_id: str
    start_time_unix_nano: int
    service: str
    environment: str
    prompt_id: str
    prompt_version: str
    provider: str
    operation: str
    request_model: str
    response_model: str | None
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    tokens_estimated: bool
    cost_usd: float | None
    status: Status
    error_type: str | None
    quality_score: float | None
    quality_metric: str | None
    labels: dict[str, str]
    sample_rate: float
    prompt_text: str | None
    response_text: str | None


class QualityRecord(TypedDict):
    """A validated quality event: :class:`~promptprof._event.QualityEvent`'s fields as a dict."""

    kind: Literal["quality"]
    schema_version: Literal[1]
    event_id: str
    start_time_unix_nano: int
    service: str
    prompt_id: str
    prompt_version: str
    request_model: str
    quality_score: float
    quality_metric: str
    labels: dict[str, str]
    sample_rate: float


Record = CallRecord | QualityRecord


def _record_schema(model: type[BaseModel]) -> Any:
    """A TypedDict validating exactly as ``model`` does (its fields, constraints, config)."""
    fields = {name: Annotated[info.annotation, info] for name, info in model.model_fields.items()}
    make: Any = TypedDict
    record = make(f"_{model.__name__}Record", fields)
    record.__pydantic_config__ = {
        "populate_by_name": model.model_config.get("populate_by_name", False),
        "extra": model.model_config.get("extra", "ignore"),
        "strict": model.model_config.get("strict", False),
    }
    return record


def _kind(raw: Any) -> str:
    return "quality" if isinstance(raw, dict) and raw.get("kind") == "quality" else "call"


def _batch_of(call: Any, quality: Any = None) -> TypeAdapter[Any]:
    """A validator of a list of ``call``, or of the tagged union of ``call`` and ``quality``."""
    item = call
    if quality is not None:
        item = Annotated[
            Annotated[call, Tag("call")] | Annotated[quality, Tag("quality")], Discriminator(_kind)
        ]
    batch: Any = list.__class_getitem__(item)
    return TypeAdapter(batch)


_call_batch = _batch_of(_record_schema(CallEvent))
_mixed_batch = _batch_of(_record_schema(CallEvent), _record_schema(QualityEvent))
# the contract's own validator, for the reasons of rejected events
_model_batch = _batch_of(CallEvent, QualityEvent)


def validate_events(raw_events: Sequence[Any]) -> tuple[list[Record], list[tuple[Any, str]]]:
    """Split raw events into validated records and ``(raw, reason)`` pairs, keeping order."""
    raws = list(raw_events)
    try:  # all C: dict.get raises TypeError on a non-dict
        mixed = "quality" in map(dict.get, raws, repeat("kind"))
    except TypeError:
        mixed = any(_kind(raw) == "quality" for raw in raws)
    adapter = _mixed_batch if mixed else _call_batch
    try:
        return cast(list[Record], adapter.validate_python(raws)), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        rejected = sorted({int(error["loc"][0]) for error in errors})
    skip = set(rejected)
    good, bad = validate_events([r for i, r in enumerate(raws) if i not in skip])
    rejects = [raws[i] for i in rejected]
    bad.extend(zip(rejects, model_reasons(rejects), strict=True))
    return good, bad


@dataclass(frozen=True, slots=True)
class CallColumns(ColumnBatch):
    """Validated call events by field name (as in :class:`CallRecord`): a list holds one value
    per event, any other value is every event's."""

    def column(self, name: str) -> list[Any]:
        """One value per event of field ``name``."""
        value = self.fields[name]
        return value if type(value) is list else [value] * self.count

    def select(self, indices: list[int], names: Sequence[str] | None = None) -> CallColumns:
        """The events at ``indices``, in that order (only their ``names`` fields if given)."""
        if len(indices) == self.count and names is None:
            return self
        source = self.fields
        fields = {k: _take(v, indices) if type(v := source[k]) is list else v
                  for k in (source if names is None else names)}
        return CallColumns(len(indices), fields)

    @classmethod
    def of_records(cls, records: Sequence[CallRecord], names: Sequence[str]) -> CallColumns:
        """The ``names`` columns of validated row records."""
        return cls(len(records), {name: list(map(itemgetter(name), records)) for name in names})


def _take(values: list[Any], indices: list[int]) -> list[Any]:
    if len(indices) > 1:
        return list(itemgetter(*indices)(values))
    return [values[i] for i in indices]


class _Field:
    """How one call-event field is validated, as a value or as a column."""

    def __init__(self, name: str, info: Any) -> None:
        self.name = name
        self.required = info.is_required()
        self.default = None if self.required else info.get_default(call_default_factory=True)
        self.one: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else (
            info.annotation
        )
        self.many: Any = list.__class_getitem__(self.one)


_call_fields = [_Field(name, info) for name, info in CallEvent.model_fields.items()]
_fields_by_key = {
    key: field
    for field, info in zip(_call_fields, CallEvent.model_fields.values(), strict=True)
    for key in dict.fromkeys((field.name, info.alias or field.name))
}


@dataclass(frozen=True, slots=True)
class _Shape:
    """The validator of the columnar envelopes whose fields have one set of keys, each a
    column or a shared value: one pydantic-core call validates every field of a batch."""

    adapter: TypeAdapter[dict[str, Any]]
    defaults: dict[str, Any]  # the fields such a batch lacks, with their defaults


@lru_cache(maxsize=256)
def _shape(keys: tuple[str, ...], types: tuple[type, ...]) -> _Shape | None:
    """The validator of batches with these field keys and value types (None when no such batch
    is valid: a field given by its name and its alias, or a required field missing)."""
    fields: dict[str, Any] = {}
    for key, kind in zip(keys, types, strict=True):
        field = _fields_by_key.get(key)
        if field is None:
            continue  # as the model, ignore keys outside the contract
        if field.name in fields:
            return None
        annotation = field.many if kind is list else field.one
        fields[field.name] = Annotated[annotation, Field(validation_alias=key)]
    if any(f.required and f.name not in fields for f in _call_fields):
        return None
    make: Any = TypedDict
    batch = make("_CallColumns", fields)
    batch.__pydantic_config__ = ConfigDict(strict=CallEvent.model_config.get("strict", False))
    defaults = {f.name: f.default for f in _call_fields if f.name not in fields}
    return _Shape(TypeAdapter(batch), defaults)


def validate_columns(
    batch: ColumnBatch,
) -> tuple[CallColumns | list[Record], list[tuple[Any, str]]]:
    """Validate a columnar envelope: its columns when every value is good, else (through
    :func:`validate_events` on its rows) the good records and the rejected events."""
    shape = _shape(tuple(batch.fields), tuple(map(type, batch.fields.values())))
    if shape is None:
        return validate_events(batch.rows())
    try:
        fields = shape.adapter.validate_python(batch.fields)
    except ValidationError:
        return validate_events(batch.rows())
    return CallColumns(batch.count, {**shape.defaults, **fields}), []


def model_reasons(raws: list[Any]) -> list[str]:
    """Why each raw event is rejected by the :class:`CallEvent`/:class:`QualityEvent` models
    (an empty string for an event they accept)."""
    try:
        _model_batch.validate_python(raws)
    except ValidationError as exc:
        reasons = _reasons_by_index(exc.errors(include_url=False, include_input=False))
        return [reasons.get(i, "") for i in range(len(raws))]
    return [""] * len(raws)


def _reasons_by_index(errors: list[ErrorDetails]) -> dict[int, str]:
    messages: dict[int, list[str]] = {}
    for error in errors:
        # loc is (item index, union tag, field...)
        index, _, *path = (*error["loc"], None)
        field = ".".join(str(p) for p in path if p is not None) or "event"
        messages.setdefault(int(index), []).append(f"{field}: {error['msg']}")
    return {i: "; ".join(m[:MAX_REASONS]) for i, m in messages.items()}
