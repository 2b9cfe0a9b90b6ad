"""What the OpenAI and Anthropic wrappers share: prompt overrides, the per-call tracker, patching.

A wrapped client method does three things around the real call: :meth:`Instrument.begin` pops
the ``promptprof=`` override and starts a :class:`~promptprof._record.Call`; the real method runs;
:meth:`Instrument.done` reads usage from the response, or hands back a stream proxy that reads
usage from the chunks and finishes the call when the stream ends. Everything provider-specific
lives in an :class:`Api` adapter. Promptprof's own failures are counted in
``Profiler.internal_errors`` and never raised; the provider's exceptions pass through untouched.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypedDict

import structlog

from promptprof._profiler import Profiler, get_profiler, make_spec
from promptprof._record import Call, PromptSpec, TextParts
from promptprof.integrations import _streams

log = structlog.get_logger("promptprof")

OVERRIDE_KWARG = "promptprof"
"""The extra keyword a wrapped method accepts (and removes) to override the prompt per call."""

_ORIGINAL_ATTR = "__promptprof_original__"
_SPEC_CACHE_MAX = 512
_TEXT_KEYS = ("text", "content")
_MAX_TEXT_DEPTH = 6


class PromptOverride(TypedDict, total=False):
    """Per-call prompt identity: any subset of these keys replaces the wrapper's defaults."""

    prompt_id: str
    version: str
    labels: Mapping[str, str]


_context_override: ContextVar[PromptOverride | None] = ContextVar(
    "promptprof_prompt_override", default=None
)


@contextmanager
def use_prompt(
    prompt_id: str | None = None, version: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Attribute the wrapped-client calls made inside the block to another prompt or version.

    Works in threads and asyncio tasks (a context variable); nested blocks win over outer ones,
    labels are merged. The ``promptprof=`` keyword of a single call wins over both.
    """
    if prompt_id == "" or version == "":
        raise ValueError("prompt_id and version must be non-empty strings")
    layer = _layer(prompt_id, version, labels)
    token = _context_override.set(_merge(_context_override.get() or {}, layer))
    try:
        yield
    finally:
        _context_override.reset(token)


def _layer(
    prompt_id: str | None, version: str | None, labels: Mapping[str, str] | None
) -> PromptOverride:
    layer = PromptOverride()
    if prompt_id is not None:
        layer["prompt_id"] = prompt_id
    if version is not None:
        layer["version"] = version
    if labels is not None:
        layer["labels"] = labels
    return layer


def _merge(outer: PromptOverride, inner: PromptOverride) -> PromptOverride:
    merged = PromptOverride(**outer)
    merged.update(inner)
    if "labels" in outer and "labels" in inner:
        merged["labels"] = {**outer["labels"], **inner["labels"]}
    return merged


def count_internal_error(profiler: Profiler | None, what: str) -> None:
    """Count a failure inside promptprof (logged at warning the first time, then at debug)."""
    try:
        if profiler is not None:
            profiler.internal_errors += 1
        level = log.debug if _logged_once[0] else log.warning
        _logged_once[0] = True
        level("promptprof.integration_error", where=what, exc_info=True)
    except Exception:  # logging itself failed: nothing more to do
        pass


_logged_once = [False]


def attr(obj: Any, *names: str) -> Any:
    """``obj.a.b.c`` for ``names`` (a, b, c), or ``None`` when any step is missing."""
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def texts_of(*values: Any) -> TextParts:
    """The strings inside messages, content parts, or lists of them (str, dict or SDK object),
    as references joined by newlines on the sender's thread.

    Only lists and tuples are walked: an iterator the caller passed is never consumed.
    """
    parts = TextParts("\n")
    for value in values:
        _collect(value, parts, 0)
    return parts


def _collect(value: Any, parts: TextParts, depth: int) -> None:
    if isinstance(value, str):
        if value:
            parts.add(value)
    elif value is None or depth > _MAX_TEXT_DEPTH:
        return
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, parts, depth + 1)
    elif isinstance(value, Mapping):
        for key in _TEXT_KEYS:
            _collect(value.get(key), parts, depth + 1)
    else:
        for key in _TEXT_KEYS:
            _collect(getattr(value, key, None), parts, depth + 1)


Usage = tuple[int | None, int | None, int | None]
"""(input tokens including cached ones, output tokens, cached input tokens)."""


class Api:
    """What one provider API needs to be profiled; subclasses fill in the provider specifics."""

    provider = "unknown"
    operation = "chat"
    sync_streams: tuple[type[Any], ...] = ()
    async_streams: tuple[type[Any], ...] = ()
    sync_managers: tuple[type[Any], ...] = ()
    async_managers: tuple[type[Any], ...] = ()
    responses: tuple[type[Any], ...] = ()

    def prompt_text(self, request: Mapping[str, Any]) -> TextParts:
        """The prompt text of a request's keyword arguments (references to its strings)."""
        raise NotImplementedError

    def response_text(self, response: Any) -> TextParts:
        """The generated text of a complete (non-streamed) response (references)."""
        raise NotImplementedError

    def read_response(self, tracker: Tracker, response: Any) -> None:
        """Record a complete response's model, usage and error on ``tracker``."""
        raise NotImplementedError

    def read_chunk(self, tracker: Tracker, chunk: Any) -> None:
        """Record one streamed chunk: content (first token), model and usage."""
        raise NotImplementedError


class Tracker:
    """One profiled request: collects what the response or the stream tells, then finishes."""

    __slots__ = (
        "api", "cached_tokens", "call", "done", "fragments", "input_tokens", "model",
        "output_tokens", "profiler", "request", "response",
    )

    def __init__(
        self, api: Api, call: Call, profiler: Profiler, request: Mapping[str, Any]
    ) -> None:
        self.api, self.call, self.profiler, self.request = api, call, profiler, request
        self.fragments = TextParts()
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.model: str | None = None
        self.response: Any = None
        self.done = False

    def content(self, text: Any) -> None:
        """A streamed piece of generated text: the first one marks the first token."""
        if text and isinstance(text, str):
            self.call.first_token()
            self.fragments.add(text)

    def usage(self, usage: Usage) -> None:
        """Record token counts; ``None`` entries keep what an earlier chunk told."""
        inp, out, cached = usage
        if inp is not None:
            self.input_tokens = inp
        if out is not None:
            self.output_tokens = out
        if cached is not None:
            self.cached_tokens = cached

    def internal_error(self, what: str) -> None:
        """Count a failure inside promptprof against this call's profiler."""
        count_internal_error(self.profiler, what)

    def chunk(self, chunk: Any) -> None:
        """Read one streamed chunk (never raises)."""
        if self.done:
            return
        try:
            self.api.read_chunk(self, chunk)
        except Exception:
            count_internal_error(self.profiler, "read_chunk")

    def complete(self, response: Any) -> None:
        """Read a complete response and finish the call."""
        try:
            self.response = response
            self.api.read_response(self, response)
        except Exception:
            count_internal_error(self.profiler, "read_response")
        self.finish()

    def fail(self, error: BaseException) -> None:
        """Mark the call failed with ``error`` and finish it (the caller re-raises ``error``)."""
        try:
            if not self.done:
                self.call.set_error(error)
        except Exception:
            count_internal_error(self.profiler, "set_error")
        self.finish()

    def finish(self, *, read: bool = True) -> None:
        """Hand the call to the profiler once; ``read=False`` records the timing only."""
        if self.done:
            return
        self.done = True
        try:
            if read:
                self._apply()
            self.call.finish()
        except Exception:
            count_internal_error(self.profiler, "finish")

    def _apply(self) -> None:
        call = self.call
        call.set_model(self.model)
        inp, out = self.input_tokens, self.output_tokens
        has_usage = inp is not None or out is not None
        if has_usage:
            call.set_usage(inp, out, self.cached_tokens)
        if not (has_usage or self.fragments or self.response is not None):
            return  # failed before any answer: no tokens to count, no text to offer
        if inp is None or out is None or self.profiler.settings.producer.capture_text:
            # references only: the sender's thread joins them and counts missing tokens
            call.prompt_text = self.api.prompt_text(self.request)
            call.response_text = self._response_text()

    def _response_text(self) -> TextParts:
        if self.response is not None:
            return self.api.response_text(self.response)
        return self.fragments


class Instrument:
    """The bookkeeping of one wrapped method: prompt resolution, call start, result handling."""

    def __init__(self, api: Api, base: PromptSpec, profiler: Profiler | None) -> None:
        self.api, self.base, self.profiler = api, base, profiler
        self._by_model: dict[str, PromptSpec] = {}
        self._by_key: dict[tuple[Any, ...], PromptSpec] = {}

    def begin(self, kwargs: dict[str, Any]) -> Tracker | None:
        """Pop the override keyword and start measuring; ``None`` when not profiled."""
        override = kwargs.pop(OVERRIDE_KWARG, None)
        profiler = None
        try:
            profiler = self.profiler or get_profiler()
            if not profiler.enabled:
                return None
            call = profiler.start_call(self._spec(override, kwargs.get("model")))
            return None if call is None else Tracker(self.api, call, profiler, kwargs)
        except Exception:
            count_internal_error(profiler, "begin")
            return None

    def done(self, tracker: Tracker, result: Any) -> Any:
        """The caller's result: a stream proxy for streams, else ``result`` itself."""
        api = self.api
        try:
            if isinstance(result, api.sync_streams):
                return _streams.SyncStreamProxy(result, tracker)
            if isinstance(result, api.async_streams):
                return _streams.AsyncStreamProxy(result, tracker)
            if isinstance(result, api.sync_managers):
                return _streams.SyncManagerProxy(result, tracker)
            if isinstance(result, api.async_managers):
                return _streams.AsyncManagerProxy(result, tracker)
            if isinstance(result, api.responses):
                tracker.complete(result)
            else:  # e.g. a raw HTTP response: only the timing is known
                tracker.finish(read=False)
        except Exception:
            count_internal_error(tracker.profiler, "done")
            tracker.finish(read=False)
        return result

    def _spec(self, override: Any, model: Any) -> PromptSpec:
        model_name = model if isinstance(model, str) and model else "unknown"
        context = _context_override.get()
        if override is None and context is None:
            spec = self._by_model.get(model_name)
            if spec is None:
                spec = self._cache(self._by_model, model_name, self._build(model_name, {}))
            return spec
        layer = context or PromptOverride()
        if override is not None:
            layer = _merge(layer, _checked(override))
        key = (
            layer.get("prompt_id"), layer.get("version"),
            tuple(layer.get("labels", {}).items()), model_name,
        )
        spec = self._by_key.get(key)
        if spec is None:
            spec = self._cache(self._by_key, key, self._build(model_name, layer))
        return spec

    def _build(self, model: str, layer: PromptOverride) -> PromptSpec:
        base = self.base
        labels = {**base.labels, **layer["labels"]} if "labels" in layer else base.labels
        return make_spec(
            layer.get("prompt_id", base.prompt_id), layer.get("version", base.version), model,
            self.api.provider, self.api.operation, labels,
        )

    @staticmethod
    def _cache(cache: dict[Any, PromptSpec], key: Any, spec: PromptSpec) -> PromptSpec:
        if len(cache) >= _SPEC_CACHE_MAX:
            cache.clear()
        cache[key] = spec
        return spec


def _checked(override: Any) -> PromptOverride:
    if not isinstance(override, Mapping):
        raise TypeError(f"{OVERRIDE_KWARG}= takes a mapping, not {type(override).__name__}")
    unknown = set(override) - PromptOverride.__annotations__.keys()
    if unknown:
        raise TypeError(f"{OVERRIDE_KWARG}= got unknown keys {sorted(unknown)}")
    return PromptOverride(**override)  # type: ignore[typeddict-item]


def wrap_method(original: Callable[..., Any], instrument: Instrument) -> Callable[..., Any]:
    """A replacement of a client method that profiles each call.

    Async client methods are often sync functions returning a coroutine (behind a decorator),
    so a coroutine result is detected at run time; an ``async def`` original gets an
    ``async def`` replacement, so ``inspect.iscoroutinefunction`` answers as before.
    """

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracker = instrument.begin(kwargs)
        if tracker is None:
            return original(*args, **kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            tracker.fail(exc)
            raise
        if inspect.iscoroutine(result):
            return _awaited(result, tracker, instrument)
        return instrument.done(tracker, result)

    replacement: Callable[..., Any] = wrapper
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await wrapper(*args, **kwargs)

        replacement = async_wrapper
    setattr(replacement, _ORIGINAL_ATTR, original)
    return replacement


async def _awaited(pending: Awaitable[Any], tracker: Tracker, instrument: Instrument) -> Any:
    try:
        result = await pending
    except BaseException as exc:
        tracker.fail(exc)
        raise
    return instrument.done(tracker, result)


def _unwrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    original: Callable[..., Any] = getattr(method, _ORIGINAL_ATTR, method)
    return original


Target = tuple[tuple[str, ...], str, Api]
"""(the path of a client's resource, e.g. ``("chat", "completions")``; a method; its adapter)."""


def patch_client(
    client: Any, targets: Sequence[Target], base: PromptSpec, profiler: Profiler | None,
    rewrap: Callable[[Any], Any],
) -> None:
    """Replace the targets' methods on this client's resources (re-wrapping replaces, never
    stacks), and make ``copy``/``with_options`` return clients wrapped by ``rewrap``.

    Raises ``TypeError`` when the client has none of the targets.
    """
    patched = 0
    for path, name, api in targets:
        resource = attr(client, *path)
        method = getattr(resource, name, None)
        if method is not None:
            instrument = Instrument(api, base, profiler)
            setattr(resource, name, wrap_method(_unwrapped(method), instrument))
            patched += 1
    if not patched:
        raise TypeError(f"cannot profile a {type(client).__name__}: no method to wrap")
    for name in ("copy", "with_options"):
        method = getattr(client, name, None)
        if method is not None:
            setattr(client, name, _rewrapping(_unwrapped(method), rewrap))


def _rewrapping(
    original: Callable[..., Any], rewrap: Callable[[Any], Any]
) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        new = original(*args, **kwargs)
        try:
            return rewrap(new)
        except Exception:
            count_internal_error(None, "copy")
            return new

    setattr(copy, _ORIGINAL_ATTR, original)
    return copy
