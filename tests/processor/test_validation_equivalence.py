"""The fast validation path (records, not models) decides and explains as the models do.

The reference is the contract itself: each raw event validated by :class:`CallEvent` (or
:class:`QualityEvent` when ``"kind"`` is ``"quality"``), with the reason text the processor has
always given (``alias.path: pydantic message``, at most three, ``; ``-joined).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from promptprof._event import CallEvent, QualityEvent
from promptprof_processor.ingest.validation import (
    MAX_REASONS,
    CallRecord,
    QualityRecord,
    validate_events,
)
from tests.processor.test_validation import raw_call, raw_quality

CALL_KEYS = [f.alias or name for name, f in CallEvent.model_fields.items()]
QUALITY_KEYS = ["kind", *(f.alias or name for name, f in QualityEvent.model_fields.items())]
FIELD_NAMES = [*CallEvent.model_fields, *QualityEvent.model_fields]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-0.5, 1.5),
    st.sampled_from([0, 1, 2, 0.0, 1.0, -0.0, 1e-300, "quality", "ok", "error", "1", ""]),
    st.text(max_size=5),
    st.builds(lambda n: "x" * n, st.sampled_from([1, 63, 64, 65, 127, 128, 129, 256, 257])),
)
labels = st.dictionaries(
    st.one_of(st.text(max_size=3), st.builds(lambda n: "k" * n, st.sampled_from([64, 65]))),
    st.one_of(scalars, st.builds(lambda n: "v" * n, st.sampled_from([256, 257]))),
    max_size=18,
)
values = st.one_of(scalars, labels, st.lists(scalars, max_size=2))
keys = st.sampled_from([*CALL_KEYS, *QUALITY_KEYS, *FIELD_NAMES, "extra", "kind"])
mutation = st.tuples(st.sampled_from(["set", "del"]), keys, values)


@st.composite
def raw_events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(values)
    event = draw(st.sampled_from([raw_call, raw_quality]))()
    for op, key, value in draw(st.lists(mutation, max_size=4)):
        if op == "del":
            event.pop(key, None)
        else:
            event[key] = value
    return event


def model_decision(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """(the model's fields, or None when rejected; the reason)."""
    quality = isinstance(raw, dict) and raw.get("kind") == "quality"
    model = QualityEvent if quality else CallEvent
    try:
        return model.model_validate(raw).model_dump(), ""
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        messages = [f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in errors]
        return None, "; ".join(messages[:MAX_REASONS])


@settings(max_examples=400, deadline=None)
@given(st.lists(raw_events(), max_size=8))
def test_records_and_reasons_match_the_models(raws: list[Any]) -> None:
    good, bad = validate_events(raws)
    expected = [model_decision(raw) for raw in raws]
    assert good == [fields for fields, _ in expected if fields is not None]
    assert bad == [(raw, why) for raw, (f, why) in zip(raws, expected, strict=True) if f is None]


@settings(max_examples=200, deadline=None)
@given(raw_events())
def test_a_single_event_is_decided_as_the_model_decides(raw: Any) -> None:
    good, bad = validate_events([raw])
    fields, reason = model_decision(raw)
    if fields is None:
        assert good == [] and bad == [(raw, reason)]
    else:
        assert good == [fields] and bad == []


def test_record_types_list_the_model_fields() -> None:
    assert list(CallRecord.__annotations__) == list(CallEvent.model_fields)
    assert list(QualityRecord.__annotations__) == list(QualityEvent.model_fields)
