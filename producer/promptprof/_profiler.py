"""The profiler a service calls: ``@profile``, ``track``, and the process-wide profiler.

The hot path is a clock read before and after the call and one bounded, non-blocking append to
the buffer; everything else happens on the sender thread. Nothing here raises into the host: a
failure inside promptprof is counted and logged, never propagated. The host's own exceptions
pass through untouched.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import random
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

import structlog

from promptprof._buffer import EventBuffer
from promptprof._config import Settings, load_settings
from promptprof._event import MAX_LABELS
from promptprof._record import (
    Call,
    Evaluator,
    EventBuilder,
    PromptSpec,
    Redactor,
    TextParts,
    register_spec,
    reset_event_ids,
)
from promptprof._selfstats import StatsReporter, start_reporter
from promptprof._sender import Sender
from promptprof.export import Exporter, default_exporter

P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger("promptprof")

_perf_ns = time.perf_counter_ns


class Profiler:
    """Buffers measured calls; a background sender builds their events and hands them to an
    exporter (Kafka by default, see :mod:`promptprof.export`)."""

    def __init__(
        self, settings: Settings | None = None, *, redact: Redactor | None = None,
        exporter: Exporter | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.redact = redact
        self._exporter = exporter  # None: the default one, made when the sender starts
        producer = self.settings.producer
        self.enabled = producer.enabled
        self.sample_rate = producer.sample_rate
        self.buffer = _new_buffer(self.settings)
        self._sender: Sender | None = None
        self._reporter: StatsReporter | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.internal_errors = 0
        _live_profilers.add(self)

    @property
    def exporter(self) -> Exporter | None:
        """The exporter in use (None until the sender starts, unless one was given)."""
        sender = self._sender
        return sender.exporter if sender is not None else self._exporter

    def record(self, item: tuple[Any, ...]) -> None:
        """The decorators' hot path: hand a call's tuple (no texts) to the sender, without a
        lock; never blocks, never raises."""
        try:
            if self._sender is None:
                self._start()
            self.buffer.put(item)
        except Exception:
            self.internal_errors += 1

    def enqueue(self, item: Any) -> None:
        """Hand a finished :class:`Call` or a late score to the sender, its texts and labels
        counted against ``max_bytes_held``; never blocks, never raises."""
        try:
            if self._sender is None:
                self._start()
            self.buffer.put_sized(item)
        except Exception:
            self.internal_errors += 1

    def _start(self) -> None:
        with self._lock:
            if self._sender is not None or self._closed:
                return
            producer = self.settings.producer
            builder = EventBuilder(
                producer.service_name, producer.environment, producer.capture_text, self.redact
            )
            exporter = self._exporter or default_exporter(self.settings)
            sender = Sender(self.buffer, builder, self.settings, exporter)
            sender.start()
            self._sender = sender
            if self._exporter is None:  # a given exporter (a test's memory) has no Kafka
                self._reporter = start_reporter(self.stats, self.settings)

    def stats(self) -> dict[str, Any]:
        """Self-metrics: recorded, queued, sent, dropped (by reason), retries, errors, depth."""
        sender = self._sender.stats if self._sender else None
        sent = self._sender.snapshot() if self._sender else {}
        dropped_full = self.buffer.dropped_full
        dropped_closed = self.buffer.dropped_closed
        dropped_bytes = self.buffer.dropped_bytes
        dropped_other = sender.dropped if sender else 0
        return {
            "recorded": self.buffer.accepted + dropped_full + dropped_bytes + dropped_closed,
            "queued": self.buffer.accepted,
            "buffer_depth": len(self.buffer),
            "buffer_capacity": self.settings.producer.buffer_size,
            "dropped": dropped_full + dropped_bytes + dropped_closed + dropped_other,
            "dropped_buffer_full": dropped_full,
            "dropped_bytes_limit": dropped_bytes,
            "bytes_held": self.buffer.held_bytes(),
            "max_bytes_held": self.buffer.max_bytes,
            "dropped_after_close": dropped_closed,
            "internal_errors": self.internal_errors,
            "sender_alive": bool(self._sender and self._sender.alive),
            **sent,
        }

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was handled or ``timeout`` passed.

        Handled means sent to Kafka, written durably to the disk spool (``spool_dir``; it is
        replayed later, here or by the next process), or counted as dropped. Events replayed from
        the spool are not counted twice: ``sent_events - replayed_events`` are the direct sends.
        """
        deadline = time.monotonic() + timeout
        sender = self._sender
        if sender is not None:
            sender.flush_soon()
        while time.monotonic() < deadline:
            if sender is None or self.buffer.accepted <= sender.stats.settled():
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float | None = None) -> bool:
        """Flush what is buffered for at most ``timeout`` seconds and stop the sender.

        Calls recorded afterwards are not kept: they are counted in ``dropped_after_close``.

        What is still unsent afterwards is counted as ``dropped_close``; with the disk spool on it
        is written to the spool instead (replayed by the next process using the same
        ``spool_dir``), and only what the full spool refuses is lost (``dropped_spool_full``).
        Returns True when nothing was lost.
        """
        with self._lock:
            self._closed = True
            self.buffer.close()
            sender = self._sender
        if sender is None:
            return True
        wait = self.settings.producer.close_timeout_s if timeout is None else timeout
        kept = sender.stop(wait)
        if self._reporter is not None:
            self._reporter.stop()  # its final report, after the sender's last counts
        return kept

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's queue, thread and Kafka connection, start
        afresh on first use (an exporter given by the caller is kept)."""
        self.buffer = _new_buffer(self.settings)
        if self._closed:
            self.buffer.close()
        self._sender = None
        self._reporter = None
        self._lock = threading.Lock()

    # -- measuring --------------------------------------------------------------------------

    def track(
        self, prompt_id: str, version: str, *, model: str = "unknown", provider: str = "unknown",
        operation: str = "chat", labels: Mapping[str, str] | None = None,
    ) -> Tracked:
        """A context manager (sync or async) measuring one call by hand."""
        spec = make_spec(prompt_id, version, model, provider, operation, labels)
        return Tracked(self, spec)

    def start_call(self, spec: PromptSpec) -> Call | None:
        """Begin measuring a call of ``spec``; ``None`` when disabled or sampled out."""
        if not self.enabled or (self.sample_rate < 1.0 and random.random() >= self.sample_rate):
            return None
        return Call(self, spec, self.sample_rate)


def _new_buffer(settings: Settings) -> EventBuffer:
    producer = settings.producer
    return EventBuffer(producer.buffer_size, producer.max_bytes_held, _extra_bytes)


def _extra_bytes(item: Any) -> int:
    """What a queued item holds beyond ``ITEM_BYTES``: a call's texts and labels (the sizes of
    their string objects; a quality tuple refers to a call already counted)."""
    if type(item) is not Call:
        return 0
    extra = 0
    for text in (item.prompt_text, item.response_text):
        if isinstance(text, TextParts):
            extra += text.nbytes
        elif text is not None:
            extra += sys.getsizeof(text)
    labels = item.labels
    if labels:
        extra += sys.getsizeof(labels) + sum(map(sys.getsizeof, labels.keys()))
        extra += sum(map(sys.getsizeof, labels.values()))
    return extra


class Tracked:
    """The context manager returned by :func:`track`; yields a :class:`Call` (or a no-op)."""

    __slots__ = ("_call", "_profiler", "_spec")

    def __init__(self, profiler: Profiler, spec: PromptSpec) -> None:
        self._profiler, self._spec = profiler, spec
        self._call: Call | None = None

    def __enter__(self) -> Call:
        call = self._profiler.start_call(self._spec)
        self._call = call
        return call if call is not None else Call(_NULL_PROFILER, self._spec, 1.0)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = self._call
        if call is not None:
            if exc_type is not None and call.error_type is None:
                call.error_type = exc_type.__name__
            call.finish()

    async def __aenter__(self) -> Call:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class _NullProfiler:
    """Swallows what a sampled-out or disabled call records."""

    def enqueue(self, item: Any) -> None:
        """Discard ``item``."""


_NULL_PROFILER = _NullProfiler()


def make_spec(
    prompt_id: str, version: str, model: str = "unknown", provider: str = "unknown",
    operation: str = "chat", labels: Mapping[str, str] | None = None,
    evaluator: Evaluator | None = None, quality_metric: str = "custom",
) -> PromptSpec:
    """Build a :class:`PromptSpec`, validating it once at decoration time.

    Values that cannot be InfluxDB tags exactly are not refused here but by the sender, which
    counts each such call in ``dropped_invalid_value``: recording never raises for them.
    """
    if not prompt_id or not version:
        raise ValueError("prompt_id and version must be non-empty strings")
    bounded = {str(k): str(v) for k, v in list((labels or {}).items())[:MAX_LABELS]}
    return PromptSpec(
        prompt_id, version, model, provider, operation, bounded, evaluator, quality_metric
    )


# -- the process-wide profiler ------------------------------------------------------------

_live_profilers: weakref.WeakSet[Profiler] = weakref.WeakSet()
_default: list[Profiler | None] = [None]
_default_lock = threading.Lock()


def configure(
    settings: Settings | None = None, *, redact: Redactor | None = None,
    exporter: Exporter | None = None, **overrides: Any,
) -> Profiler:
    """Set up the process-wide profiler (closing a previous one) and return it.

    ``overrides`` are settings sections, e.g. ``producer={"service_name": "search"}``;
    ``exporter`` replaces the Kafka exporter (e.g. :class:`promptprof.testing.InMemoryExporter`).
    Raises :class:`promptprof._config.ConfigError` naming any invalid field.
    """
    new = Profiler(settings or load_settings(**overrides), redact=redact, exporter=exporter)
    with _default_lock:
        old, _default[0] = _default[0], new
    if old is not None:
        old.close()
    return new


def get_profiler() -> Profiler:
    """The process-wide profiler, configured from the environment on first use."""
    profiler = _default[0]
    if profiler is not None:
        return profiler
    with _default_lock:
        profiler = _default[0]
        if profiler is None:
            profiler = _default[0] = _profiler_from_env()
        return profiler


def _profiler_from_env() -> Profiler:
    try:
        return Profiler(load_settings())
    except Exception as exc:  # an invalid environment must not break the host's calls
        log.error("promptprof.config_invalid", error=str(exc), action="profiling disabled")
        disabled = Settings()
        disabled.producer.enabled = False
        return Profiler(disabled)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the process-wide profiler."""
    profiler = _default[0]
    return profiler.close(timeout) if profiler is not None else True


def track(
    prompt_id: str, version: str, *, model: str = "unknown", provider: str = "unknown",
    operation: str = "chat", labels: Mapping[str, str] | None = None,
) -> Tracked:
    """Measure one call by hand: ``with track("faq", "v3") as call: ...``."""
    return get_profiler().track(
        prompt_id, version, model=model, provider=provider, operation=operation, labels=labels
    )


@overload
def profile(
    func: Callable[P, R], /,
) -> Callable[P, R]: ...


@overload
def profile(
    *, prompt_id: str | None = None, version: str = "1", model: str = "unknown",
    provider: str = "unknown", operation: str = "chat", labels: Mapping[str, str] | None = None,
    evaluator: Evaluator | None = None, quality_metric: str = "custom",
    profiler: Profiler | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def profile(
    func: Callable[P, R] | None = None, /, *, prompt_id: str | None = None, version: str = "1",
    model: str = "unknown", provider: str = "unknown", operation: str = "chat",
    labels: Mapping[str, str] | None = None, evaluator: Evaluator | None = None,
    quality_metric: str = "custom", profiler: Profiler | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Measure every call of a sync or async function as one LLM call of a prompt.

    ``evaluator`` receives the return value on the sender thread and returns a quality score
    in [0, 1] (or ``(score, metric_name)``). ``prompt_id`` defaults to the function's name.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        spec = make_spec(
            prompt_id or fn.__qualname__, version, model, provider, operation, labels,
            evaluator, quality_metric,
        )
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _wrap_async(cast(Any, fn), spec, profiler))
        return _wrap_sync(fn, spec, profiler)

    return decorate(func) if func is not None else decorate


def _wrap_sync(fn: Callable[P, R], spec: PromptSpec, fixed: Profiler | None) -> Callable[P, R]:
    keep_result = spec.evaluator is not None
    index = register_spec(spec)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        prof = fixed or _default[0] or get_profiler()
        rate = prof.sample_rate
        if not prof.enabled or (rate < 1.0 and random.random() >= rate):
            return fn(*args, **kwargs)
        start = _perf_ns()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            prof.record((index, start, _perf_ns(), type(exc).__name__, None, rate))
            raise
        prof.record((index, start, _perf_ns(), None, result if keep_result else None, rate))
        return result

    return wrapper


def _wrap_async(
    fn: Callable[P, Awaitable[R]], spec: PromptSpec, fixed: Profiler | None
) -> Callable[P, Awaitable[R]]:
    keep_result = spec.evaluator is not None
    index = register_spec(spec)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        prof = fixed or _default[0] or get_profiler()
        rate = prof.sample_rate
        if not prof.enabled or (rate < 1.0 and random.random() >= rate):
            return await fn(*args, **kwargs)
        start = _perf_ns()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            prof.record((index, start, _perf_ns(), type(exc).__name__, None, rate))
            raise
        prof.record((index, start, _perf_ns(), None, result if keep_result else None, rate))
        return result

    return wrapper


def _close_all_at_exit() -> None:
    for profiler in list(_live_profilers):
        profiler.close()


def _reinit_after_fork() -> None:
    reset_event_ids()
    for profiler in list(_live_profilers):
        profiler._after_fork()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
