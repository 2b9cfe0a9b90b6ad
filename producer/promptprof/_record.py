"""What the hot path records, and how the sender turns it into call events.

The hot path stores the cheapest thing that holds the facts (a :class:`Call` or a small tuple);
ids, wall-clock times, costs, token estimates, evaluators and the redaction hook all run later on
the sender thread, in :class:`EventBuilder`.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Literal

import structlog

from promptprof._event import (
    MAX_ERROR_TYPE_LEN,
    MAX_LABEL_KEY_LEN,
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    MAX_MODEL_LEN,
    MAX_PROMPT_ID_LEN,
    MAX_VERSION_LEN,
    SCHEMA_VERSION,
    series_key,
    tag_problem,
)
from promptprof._pricing import call_cost
from promptprof._tokens import estimate_tokens

log = structlog.get_logger("promptprof")

Evaluator = Callable[[Any], float | tuple[float, str]]
Redactor = Callable[[str], str]
ScoreDropReason = Literal["not_a_number", "not_finite", "out_of_range", "evaluator_raised"]


class ScoreDrops:
    """Scores dropped (never their call), counted by reason; one counter per process.

    A score is dropped when it is not a real number (``None``, a string, a bool), not finite, or
    outside [0, 1], and when the evaluator that should give it raises. The first drop of each
    reason is logged; the rest are only counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[ScoreDropReason] = Counter()

    def add(self, reason: ScoreDropReason, prompt_id: str, detail: str) -> None:
        """Count one dropped score."""
        with self._lock:
            self._counts[reason] += 1
            first = self._counts[reason] == 1
        if first:
            log.warning("promptprof.score_dropped", reason=reason, prompt_id=prompt_id,
                        detail=detail[:200])

    def snapshot(self) -> dict[str, Any]:
        """``scores_dropped`` (total) and ``scores_dropped_by_reason``."""
        with self._lock:
            counts = dict(self._counts)
        return {"scores_dropped": sum(counts.values()), "scores_dropped_by_reason": counts}

    def reset(self) -> None:
        """Start counting from zero (a forked child)."""
        with self._lock:
            self._counts.clear()


SCORE_DROPS = ScoreDrops()


def score_drops() -> dict[str, Any]:
    """How many quality scores this process dropped, in total and by reason."""
    return SCORE_DROPS.snapshot()


def checked_score(value: object) -> float | ScoreDropReason:
    """``value`` as a float when it is a finite real number in [0, 1], else why it is not."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return "not_a_number"
    score = float(value)
    if not math.isfinite(score):
        return "not_finite"
    return score if 0.0 <= score <= 1.0 else "out_of_range"


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """The fixed identity of a profiled prompt: what one ``@profile`` or ``track`` names."""

    prompt_id: str
    version: str
    model: str = "unknown"
    provider: str = "unknown"
    operation: str = "chat"
    labels: Mapping[str, str] = field(default_factory=dict)
    evaluator: Evaluator | None = None
    quality_metric: str = "custom"


class InvalidValue(ValueError):
    """A call whose prompt id, version, model, error type or label cannot reach InfluxDB
    exactly: the sender refuses the call and counts it in ``dropped_invalid_value``."""


def check_tag(field: str, value: object, max_length: int, *, required: bool = True) -> None:
    """Raise :class:`InvalidValue` naming ``field`` when ``value`` cannot be a tag value."""
    problem = tag_problem(value, max_length, required=required)
    if problem is not None:
        raise InvalidValue(f"{field} {problem}")


def check_spec(spec: PromptSpec) -> None:
    """Raise :class:`InvalidValue` when a tag value of ``spec`` cannot reach InfluxDB exactly."""
    check_tag("prompt_id", spec.prompt_id, MAX_PROMPT_ID_LEN)
    check_tag("version", spec.version, MAX_VERSION_LEN)
    check_tag("model", spec.model, MAX_MODEL_LEN, required=False)
    check_labels(spec.labels)


def check_labels(labels: Mapping[str, str]) -> None:
    """Raise :class:`InvalidValue` for a label key over 64 characters or a bad label value."""
    for key, value in labels.items():
        if len(key) > MAX_LABEL_KEY_LEN:
            raise InvalidValue(f"label key {key[:40]!r} is longer than {MAX_LABEL_KEY_LEN}")
        problem = tag_problem(value, MAX_LABEL_VALUE_LEN, required=False)
        if problem is not None:  # the field's name is built only for a refusal
            raise InvalidValue(f"label {key[:40]!r} {problem}")


TEXT_KEEP_CHARS = 256 * 1024
"""Characters of one prompt or response a :class:`TextParts` keeps; beyond, it only counts."""


class TextParts:
    """A prompt's or a response's text as references to the strings it is made of.

    The client wrappers fill it on the host's thread (no copy, no join: the strings are
    immutable, so a caller changing its messages afterwards changes nothing here); the sender's
    thread joins it with ``sep`` and estimates its tokens. At most :data:`TEXT_KEEP_CHARS`
    characters are kept (the rest only counted: the token estimate is scaled to every character,
    a captured text is cut), so a long stream holds a bounded amount; :attr:`nbytes` is what it
    holds, counted against ``max_bytes_held`` once the call is queued.
    """

    __slots__ = ("_joined", "chars", "kept_chars", "parts", "sep")

    def __init__(self, sep: str = "") -> None:
        self.sep = sep
        self.parts: list[str] = []
        self.chars = 0
        self.kept_chars = 0
        self._joined: str | None = None

    def add(self, text: str) -> None:
        """Keep (a reference to) ``text`` while under the bound; count its characters."""
        size = len(text)
        self.chars += size
        if self.kept_chars + size <= TEXT_KEEP_CHARS:
            self.parts.append(text)
            self.kept_chars += size
        elif self.kept_chars < TEXT_KEEP_CHARS:
            self.parts.append(text[: TEXT_KEEP_CHARS - self.kept_chars])
            self.kept_chars = TEXT_KEEP_CHARS

    @property
    def nbytes(self) -> int:
        """Bytes held: the list and the strings it refers to (a C-level sum, no text read)."""
        parts = self.parts
        return sys.getsizeof(parts) + sum(map(sys.getsizeof, parts))

    def __bool__(self) -> bool:
        return self.chars > 0

    def text(self) -> str:
        """The kept text, joined (once)."""
        if self._joined is None:
            self._joined = self.sep.join(self.parts)
        return self._joined

    def tokens(self, model: str) -> int:
        """Estimated tokens of the whole text (the kept part's, scaled to every character)."""
        kept = estimate_tokens(self.text(), model)
        if self.kept_chars >= self.chars:
            return kept
        return round(kept * self.chars / self.kept_chars)


Text = str | TextParts
"""A call's prompt or response text: a string, or parts joined on the sender's thread."""


class Call:
    """One call being measured: filled in by the caller or a client wrapper, then enqueued.

    Setters may be called until the call ends; ``score`` may be called afterwards too.
    """

    __slots__ = (
        "_event_id",
        "_profiler",
        "cached_tokens",
        "end_ns",
        "error_type",
        "first_token_ns",
        "input_tokens",
        "labels",
        "output_tokens",
        "prompt_text",
        "quality",
        "quality_metric",
        "response_model",
        "response_text",
        "result",
        "sample_rate",
        "spec",
        "start_ns",
        "tokens_estimated",
    )

    def __init__(self, profiler: Any, spec: PromptSpec, sample_rate: float) -> None:
        self._profiler = profiler
        self._event_id: str | None = None
        self.spec = spec
        self.sample_rate = sample_rate
        self.start_ns = time.perf_counter_ns()
        self.end_ns: int | None = None
        self.first_token_ns: int | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.tokens_estimated = False
        self.response_model: str | None = None
        self.error_type: str | None = None
        self.quality: float | None = None
        self.quality_metric: str | None = None
        self.labels: dict[str, str] | None = None
        self.prompt_text: Text | None = None
        self.response_text: Text | None = None
        self.result: Any = None

    @property
    def event_id(self) -> str:
        """The id the call's event will carry (to attach a score later)."""
        if self._event_id is None:
            self._event_id = new_event_id()
        return self._event_id

    def first_token(self) -> None:
        """Mark the arrival of the first streamed token (only the first mark counts)."""
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()

    def set_usage(
        self, input_tokens: int | None = None, output_tokens: int | None = None,
        cached_tokens: int | None = None, *, estimated: bool = False,
    ) -> None:
        """Record token usage (as returned by the API, or ``estimated``)."""
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_tokens = cached_tokens
        self.tokens_estimated = estimated

    def set_model(self, response_model: str | None) -> None:
        """Record the model that actually answered."""
        self.response_model = response_model

    def set_error(self, error: BaseException | str) -> None:
        """Mark the call failed with an error type (an exception or its type name)."""
        self.error_type = error if isinstance(error, str) else type(error).__name__

    def set_text(self, prompt: str | None = None, response: str | None = None) -> None:
        """Offer the prompt and response text (sent only with ``capture_text``, redacted)."""
        self.prompt_text = prompt
        self.response_text = response

    def label(self, key: str, value: str) -> None:
        """Attach a user label (at most 16; extra labels are ignored)."""
        if self.labels is None:
            self.labels = dict(self.spec.labels)
        if len(self.labels) < MAX_LABELS or key in self.labels:
            self.labels[key] = value

    def score(self, value: float, metric: str = "custom") -> None:
        """Attach a quality score in [0, 1]; after the call ended it is sent as its own event.

        A score that is not a finite number in [0, 1] is dropped and counted (see
        :class:`ScoreDrops`); the call is kept. Never raises.
        """
        score = checked_score(value)
        if isinstance(score, str):
            SCORE_DROPS.add(score, self.spec.prompt_id, repr(value))
        elif self.end_ns is None:
            self.quality, self.quality_metric = score, metric
        else:
            self._profiler.enqueue(("quality", self, score, metric))

    def finish(self) -> None:
        """End the call and hand it to the profiler (idempotent)."""
        if self.end_ns is None:
            self.end_ns = time.perf_counter_ns()
            self._profiler.enqueue(self)


_SPECS: list[PromptSpec] = []
TEMPLATE_CACHE_SIZE = 4096


def register_spec(spec: PromptSpec) -> int:
    """Give a long-lived spec (a decorated function's) an index for the hot path's tuples.

    The queued tuple then holds only atomic values, which the garbage collector stops tracking,
    so a large buffer does not lengthen collections on the host's threads.
    """
    _SPECS.append(spec)
    return len(_SPECS) - 1


_PROCESS_PREFIX = [os.urandom(6).hex()]
_COUNTER = [itertools.count()]


def new_event_id() -> str:
    """A unique event id: a random per-process prefix and a counter."""
    return f"{_PROCESS_PREFIX[0]}{next(_COUNTER[0]):x}"


def reset_event_ids() -> None:
    """Give a forked child its own id prefix (and its own count of dropped scores)."""
    _PROCESS_PREFIX[0] = os.urandom(6).hex()
    _COUNTER[0] = itertools.count()
    SCORE_DROPS.reset()


class EventBuilder:
    """Turns recorded calls into call-event dicts on the sender thread."""

    def __init__(
        self, service: str, environment: str, capture_text: bool, redact: Redactor | None
    ) -> None:
        self.service = service
        self.environment = environment
        self.capture_text = capture_text
        self.redact = redact
        self.clock_offset_ns = 0
        self._templates: dict[int, tuple[PromptSpec, dict[str, Any], bytes]] = {}
        self.sync_clock()

    def sync_clock(self) -> None:
        """Re-read the offset from the monotonic clock to the wall clock."""
        self.clock_offset_ns = time.time_ns() - time.perf_counter_ns()

    def build(self, item: Any) -> dict[str, Any]:
        """The event dict of one queued item (a Call, a decorator tuple, or a quality tuple)."""
        return self.build_keyed(item)[1]

    def build_keyed(self, item: Any) -> tuple[bytes, dict[str, Any]]:
        """The Kafka key (the series) and the event dict of one queued item."""
        if isinstance(item, Call):
            return self._from_call(item)
        if len(item) == 4:
            return self._quality(item[1], item[2], item[3])
        index, start_ns, end_ns, error_type, result, sample_rate = item
        spec = _SPECS[index]
        key, event = self._base(spec, new_event_id(), start_ns, end_ns, sample_rate)
        if error_type is not None:
            check_tag("error_type", error_type, MAX_ERROR_TYPE_LEN)
            event["promptprof.status"] = "error"
            event["error.type"] = error_type
        elif spec.evaluator is not None:
            self._evaluate(event, spec, result)
        return key, event

    def _base(
        self, spec: PromptSpec, event_id: str, start_ns: int, end_ns: int, sample_rate: float
    ) -> tuple[bytes, dict[str, Any]]:
        key, template = self._template(spec)
        event = template.copy()
        event["event_id"] = event_id
        event["start_time_unix_nano"] = start_ns + self.clock_offset_ns
        event["promptprof.latency_ms"] = (end_ns - start_ns) / 1e6
        event["promptprof.sample_rate"] = sample_rate
        return key, event

    def _template(self, spec: PromptSpec) -> tuple[bytes, dict[str, Any]]:
        """The fields every event of ``spec`` shares, and its series key, computed once."""
        hit = self._templates.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[2], hit[1]
        check_spec(spec)
        if len(self._templates) >= TEMPLATE_CACHE_SIZE:
            self._templates.clear()
        template = {
            "schema_version": SCHEMA_VERSION,
            "service.name": self.service,
            "deployment.environment.name": self.environment,
            "promptprof.prompt.id": spec.prompt_id,
            "promptprof.prompt.version": spec.version,
            "gen_ai.provider.name": spec.provider,
            "gen_ai.operation.name": spec.operation,
            "gen_ai.request.model": spec.model,
            "promptprof.status": "ok",
            "promptprof.labels": spec.labels,
        }
        key = series_key(template)
        self._templates[id(spec)] = (spec, template, key)
        return key, template

    def _from_call(self, call: Call) -> tuple[bytes, dict[str, Any]]:
        spec = call.spec
        key, event = self._base(
            spec, call.event_id, call.start_ns, call.end_ns or call.start_ns, call.sample_rate
        )
        if call.first_token_ns is not None:
            event["gen_ai.server.time_to_first_token"] = (call.first_token_ns - call.start_ns) / 1e6
        if call.response_model:
            event["gen_ai.response.model"] = call.response_model
        if call.labels:
            event["promptprof.labels"] = _bounded_labels(call.labels)
        if call.error_type is not None:
            error_type = call.error_type[:MAX_ERROR_TYPE_LEN]
            check_tag("error_type", error_type, MAX_ERROR_TYPE_LEN)
            event["promptprof.status"] = "error"
            event["error.type"] = error_type
        self._usage(event, call)
        if call.quality is not None:
            event["promptprof.quality.score"] = call.quality
            event["promptprof.quality.metric"] = call.quality_metric
        elif spec.evaluator is not None and call.error_type is None:
            self._evaluate(event, spec, call.result)
        if self.capture_text:
            self._text(event, call)
        return key, event

    def _usage(self, event: dict[str, Any], call: Call) -> None:
        model = call.response_model or call.spec.model
        inp, out = call.input_tokens, call.output_tokens
        estimated = call.tokens_estimated
        if inp is None and call.prompt_text:
            inp, estimated = _tokens(call.prompt_text, model), True
        if out is None and call.response_text:
            out, estimated = _tokens(call.response_text, model), True
        if inp is None and out is None:
            return
        event["gen_ai.usage.input_tokens"] = inp
        event["gen_ai.usage.output_tokens"] = out
        if call.cached_tokens is not None:
            event["gen_ai.usage.cache_read.input_tokens"] = call.cached_tokens
        event["promptprof.tokens.estimated"] = estimated
        event["promptprof.cost.usd"] = call_cost(
            call.spec.provider, model, inp, out, call.cached_tokens
        )

    def _text(self, event: dict[str, Any], call: Call) -> None:
        for key, text in (
            ("gen_ai.input.messages", call.prompt_text),
            ("gen_ai.output.messages", call.response_text),
        ):
            if text is not None:
                plain = text.text() if isinstance(text, TextParts) else text
                event[key] = self.redact(plain) if self.redact else plain

    def _evaluate(self, event: dict[str, Any], spec: PromptSpec, result: Any) -> None:
        """Attach the evaluator's score; a failing evaluator or a bad score loses only the score."""
        assert spec.evaluator is not None
        try:
            outcome: object = spec.evaluator(result)
        except Exception as exc:  # an evaluator's bug must not lose the call
            SCORE_DROPS.add("evaluator_raised", spec.prompt_id, repr(exc))
            return
        value, metric = _score_and_metric(outcome, spec.quality_metric)
        score = checked_score(value)
        if isinstance(score, str):
            SCORE_DROPS.add(score, spec.prompt_id, repr(outcome))
            return
        event["promptprof.quality.score"] = score
        event["promptprof.quality.metric"] = metric

    def _quality(self, call: Call, value: float, metric: str) -> tuple[bytes, dict[str, Any]]:
        key, _ = self._template(call.spec)
        return key, {
            "kind": "quality",
            "schema_version": SCHEMA_VERSION,
            "event_id": call.event_id,
            "start_time_unix_nano": call.start_ns + self.clock_offset_ns,
            "service.name": self.service,
            "promptprof.prompt.id": call.spec.prompt_id,
            "promptprof.prompt.version": call.spec.version,
            "gen_ai.request.model": call.spec.model,
            "promptprof.quality.score": value,
            "promptprof.quality.metric": metric,
            "promptprof.labels": _bounded_labels(call.labels) if call.labels else call.spec.labels,
            "promptprof.sample_rate": call.sample_rate,
        }


def _score_and_metric(outcome: object, default_metric: str) -> tuple[object, str]:
    """An evaluator's ``score`` or ``(score, metric)``; a malformed tuple is not a number."""
    if not isinstance(outcome, tuple):
        return outcome, default_metric
    if len(outcome) == 2 and isinstance(outcome[1], str):
        return outcome[0], outcome[1]
    return None, default_metric


def _bounded_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The first 16 labels as strings; raises :class:`InvalidValue` for one that cannot be
    written exactly (never truncated: a cut value would merge series)."""
    bounded = {str(k): str(v) for k, v in itertools.islice(labels.items(), MAX_LABELS)}
    check_labels(bounded)
    return bounded


def _tokens(text: Text, model: str) -> int:
    return text.tokens(model) if isinstance(text, TextParts) else estimate_tokens(text, model)
