"""``promptprof bench``: run a suite's prompts on its dataset and write a run file.

Every call is measured by the producer's profiler, as in production: a :class:`BenchProfiler`
records each call with the producer's own code (the client wrappers, or ``track`` for the
simulated provider) and turns it into the run file's record through the producer's
:class:`~promptprof._record.EventBuilder`, so latency, TTFT, tokens, cost and errors mean exactly
what they mean in the dashboards. The events are also published to Kafka when the settings
enable the producer and a broker answers at start; otherwise the bench runs offline and never
waits on Kafka. Unlike a service's profiler the bench's ignores ``sample_rate``: every call
counts. The calls are all made first and scored afterwards, so evaluators never delay the
measurement of other calls; the primary evaluator's score is then attached to each call as a
quality event.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import Field

from promptprof import Call, Profiler, Settings
from promptprof._record import EventBuilder, PromptSpec
from promptprof.testing import InMemoryExporter
from promptprof_compare.cli import EXIT_OK, EXIT_USAGE
from promptprof_compare.dataset import Item, load_dataset
from promptprof_compare.evaluators import EvaluatorError, Evaluators, Sample, references
from promptprof_compare.gitdiff import head_commit
from promptprof_compare.inputs import InputError
from promptprof_compare.order import OrderName, Slot, call_order, sequential_order
from promptprof_compare.prompts import Prompt, load_prompt_dir, select
from promptprof_compare.providers import (
    ApiProviderConfig,
    Backend,
    Request,
    call_seed,
    open_backend,
)
from promptprof_compare.runfile import CallRecord, RunFile, RunFileError, RunMetadata, save_run
from promptprof_compare.suite import Suite, load_suite

KAFKA_PROBE_TIMEOUT_S = 0.5
_NS_PER_MS = 1_000_000

T = TypeVar("T")

_captured: ContextVar[list[Call] | None] = ContextVar("promptprof_bench_calls", default=None)


class BenchRecord(CallRecord):
    """A run-file record with every evaluator's score (readers of plain run files ignore it)."""

    quality_scores: dict[str, float] = Field(
        default_factory=dict, description="Score of each evaluator, by evaluator name."
    )


class BenchRun(RunFile):
    """A run file whose records keep every evaluator's score."""

    prompts: dict[str, list[BenchRecord]]  # type: ignore[assignment]  # records are CallRecords


class BenchProfiler(Profiler):
    """Measures every bench call (no sampling). Its events go to Kafka when ``publish``, else to
    a :class:`~promptprof.testing.InMemoryExporter` (nothing leaves the process).

    The calls started in a bench task are also handed to that task (see :func:`_measure`): the
    run file needs each request's own call, which no exporter can tell.
    """

    def __init__(self, settings: Settings, *, publish: bool) -> None:
        super().__init__(settings, exporter=None if publish else InMemoryExporter())
        self.enabled, self.sample_rate, self.publish = True, 1.0, publish
        producer = settings.producer
        self.builder = EventBuilder(producer.service_name, producer.environment, False, None)

    def start_call(self, spec: PromptSpec) -> Call:
        """Begin measuring a call, and hand it to the bench task that makes it."""
        call = Call(self, spec, 1.0)
        captured = _captured.get()
        if captured is not None:
            captured.append(call)
        return call

    def finish(self) -> None:
        """Flush what is to be published (for at most the producer's close timeout)."""
        self.close()


def kafka_reachable(bootstrap_servers: str, timeout_s: float = KAFKA_PROBE_TIMEOUT_S) -> bool:
    """Whether any of the bootstrap servers accepts a TCP connection within ``timeout_s``."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def open_profiler(settings: Settings | None) -> BenchProfiler:
    """A profiler publishing to Kafka when ``settings`` enable it and a broker answers."""
    if settings is None:
        return BenchProfiler(Settings(), publish=False)
    enabled = settings.producer.enabled
    publish = enabled and kafka_reachable(settings.kafka.bootstrap_servers)
    return BenchProfiler(settings, publish=publish)


@dataclass(frozen=True)
class Bench:
    """A suite ready to run: its prompts, its dataset items and its evaluators."""

    suite: Suite
    prompts: tuple[Prompt, ...]
    items: tuple[Item, ...]
    evaluators: Evaluators


def _check_variables(prompts: Sequence[Prompt], items: Sequence[Item], dataset: Path) -> None:
    for prompt in prompts:
        for item in items:
            missing = sorted(prompt.placeholders - item.input.keys())
            if missing:
                raise InputError(
                    f"{dataset}:{item.line}", f"input has no {', '.join(missing)}, used by "
                    f"prompt {prompt.id!r} ({prompt.source})"
                )


def _check_references(evaluators: Evaluators, items: Sequence[Item], dataset: Path) -> None:
    for scorer in evaluators.scorers:
        if scorer.reference_field is None:
            continue
        for item in items:
            try:
                references(item, scorer.reference_field)
            except ValueError as exc:
                raise InputError(
                    f"{dataset}:{item.line}", f"evaluator {scorer.name!r}: {exc}"
                ) from None


def build_evaluators(suite: Suite) -> Evaluators:
    """The suite's evaluators, built; an :class:`InputError` names the one that cannot be."""
    scorers = []
    for index, config in enumerate(suite.config.evaluators):
        try:
            scorers.append(config.build(suite.base_dir))
        except (EvaluatorError, InputError) as exc:
            raise InputError(suite.path, f"evaluators.{index} ({config.label}): {exc}") from None
    return Evaluators(scorers, suite.config.primary_evaluator)


def _check_provider(suite: Suite) -> None:
    provider = suite.config.provider
    if isinstance(provider, ApiProviderConfig):
        try:
            provider.api_key()
        except InputError as exc:
            raise InputError(suite.path, str(exc)) from None


def prepare(
    suite: Suite, prompts: Sequence[Prompt] | None = None, *, prompt_dir: Path | None = None
) -> Bench:
    """Check a suite against its prompts and dataset and build its evaluators.

    ``prompts`` replaces the suite's prompt files (``promptprof ci`` passes the changed ones);
    ``prompt_dir`` replaces the directory they are read from. Raises :class:`InputError`.
    """
    if prompts is None:
        found = load_prompt_dir(prompt_dir or suite.prompt_dir)
        prompts = select(found, suite.config.prompts, str(suite.path))
    if not prompts:
        raise InputError(suite.path, f"no prompt file in {prompt_dir or suite.prompt_dir}")
    _check_provider(suite)
    items = load_dataset(suite.dataset)
    _check_variables(prompts, items, suite.dataset)
    evaluators = build_evaluators(suite)
    _check_references(evaluators, items, suite.dataset)
    return Bench(suite, tuple(prompts), tuple(items), evaluators)


def _requests(bench: Bench, seed: int) -> list[Request]:
    repetitions = bench.suite.config.repetitions
    return [
        Request(prompt, rendered, item, repetition, call_seed(seed, prompt.id, item.id, repetition))
        for prompt in bench.prompts
        for item in bench.items
        for rendered in (prompt.render(item.input),)
        for repetition in range(repetitions)
    ]


async def _call(backend: Backend, request: Request) -> tuple[str, str | None]:
    """The answer and the name of the exception the call raised (``None`` when it did not)."""
    try:
        async with asyncio.timeout(backend.deadline_s):
            return await backend.complete(request), None
    except Exception as exc:
        return "", type(exc).__name__


@dataclass(frozen=True)
class _Measured:
    """One call as measured: its request, the profiler's call and event, its answer."""

    request: Request
    call: Call | None
    event: dict[str, Any]
    raised: str | None
    output: str

    @property
    def error(self) -> str | None:
        """The error type of a failed call, ``None`` when it succeeded."""
        error = self.event.get("error.type")
        if self.raised is not None and (error is None or self.raised == "TimeoutError"):
            return self.raised  # a cancelled call's event says CancelledError: the deadline passed
        return error if isinstance(error, str) else None


def _unmeasured(started_ns: int) -> dict[str, Any]:
    """The event of a call that failed before the profiler saw it."""
    return {"promptprof.latency_ms": (time.perf_counter_ns() - started_ns) / _NS_PER_MS}


async def _measure(request: Request, backend: Backend, profiler: BenchProfiler) -> _Measured:
    calls: list[Call] = []
    token = _captured.set(calls)
    started = time.perf_counter_ns()
    try:
        output, raised = await _call(backend, request)
    finally:
        _captured.reset(token)
    call = calls[-1] if calls else None
    event = profiler.builder.build(call) if call is not None else _unmeasured(started)
    return _Measured(request, call, event, raised, output)


async def _evaluate(measured: _Measured, evaluators: Evaluators) -> BenchRecord:
    """Score a successful call, attach the primary score to it, and make its record."""
    request, primary = measured.request, evaluators.primary
    scores = {}
    if measured.error is None:
        scores = await evaluators.evaluate(
            Sample(measured.output, request.item, request.rendered.text)
        )
    score = scores.get(primary) if primary else None
    if measured.call is not None and primary and score is not None:
        measured.call.score(score, primary)
    event = measured.event
    return BenchRecord(
        item_id=request.item.id,
        repetition=request.repetition,
        prompt_id=request.prompt.id,
        prompt_version=request.prompt.version,
        model=request.prompt.model,
        latency_ms=event["promptprof.latency_ms"],
        ttft_ms=event.get("gen_ai.server.time_to_first_token"),
        input_tokens=event.get("gen_ai.usage.input_tokens") or 0,
        output_tokens=event.get("gen_ai.usage.output_tokens") or 0,
        cost_usd=event.get("promptprof.cost.usd"),
        status="ok" if measured.error is None else "error",
        error_type=measured.error,
        quality_score=score,
        quality_metric=primary if score is not None else None,
        quality_scores=scores,
    )


async def _limited(limit: asyncio.Semaphore, work: Awaitable[T]) -> T:
    async with limit:
        return await work


@dataclass(frozen=True)
class RunSide:
    """One run among those made together: its bench, its seed and the git ref it stands for."""

    bench: Bench
    seed: int
    git_ref: str | None


def request_key(request: Request) -> tuple[str, str, int]:
    """What pairs a base call with a candidate call: prompt id, dataset item, repetition."""
    return request.prompt.id, request.item.id, request.repetition


async def _run_sides(
    sides: Sequence[RunSide], order: Sequence[Slot], profiler: BenchProfiler
) -> list[BenchRun]:
    """Make every side's calls in ``order`` (on one backend), then score each side's answers.

    The sides share the first side's suite configuration (provider, concurrency, timeout).
    """
    config = sides[0].bench.suite.config
    started_at = datetime.now(UTC)
    labels = {"bench_suite": sides[0].bench.suite.name}
    backend = open_backend(config.provider, profiler, config.timeout_s, labels)
    limit = asyncio.Semaphore(config.concurrency)
    requests = [_requests(side.bench, side.seed) for side in sides]
    try:
        measured = await asyncio.gather(
            *(
                _limited(limit, _measure(requests[side][index], backend, profiler))
                for side, index in order
            )
        )
        by_side: list[list[_Measured]] = [[] for _ in sides]
        for (number, _), call in sorted(zip(order, measured, strict=True), key=lambda p: p[0]):
            by_side[number].append(call)
        runs = [
            await _score_side(run_side, calls, limit, started_at)
            for run_side, calls in zip(sides, by_side, strict=True)
        ]
    finally:
        await backend.aclose()
        for run_side in sides:
            await run_side.bench.evaluators.aclose()
        profiler.finish()
    return runs


async def _score_side(
    side: RunSide, measured: Sequence[_Measured], limit: asyncio.Semaphore, started_at: datetime
) -> BenchRun:
    records = await asyncio.gather(
        *(_limited(limit, _evaluate(call, side.bench.evaluators)) for call in measured)
    )
    config = side.bench.suite.config
    metadata = RunMetadata(
        suite=side.bench.suite.name, started_at=started_at, git_ref=side.git_ref,
        provider=config.provider.type, seed=side.seed, monthly_volume=config.monthly_volume,
    )
    return BenchRun(run=metadata, prompts=_by_prompt(side.bench.prompts, records))


async def run_bench(
    bench: Bench, *, seed: int | None = None, profiler: BenchProfiler | None = None,
    git_ref: str | None = None,
) -> BenchRun:
    """Run every prompt on every item ``repetitions`` times, ``concurrency`` calls at a time.

    All calls are made first, then the answers are scored (also ``concurrency`` at a time), so
    evaluators (an embedding model, a judge) never delay the measurement of other calls.
    ``seed`` defaults to the suite's; ``profiler`` to one that publishes nothing.
    """
    side = RunSide(bench, bench.suite.config.seed if seed is None else seed, git_ref)
    order = sequential_order([request_key(r) for r in _requests(bench, side.seed)], [])
    (run,) = await _run_sides([side], order, profiler or open_profiler(None))
    return run


async def run_paired(
    base: RunSide, candidate: RunSide, *, order: OrderName, profiler: BenchProfiler | None = None
) -> tuple[BenchRun, BenchRun]:
    """Make the base and the candidate calls in one run, in ``order``; then score each side.

    ``blocked`` (the default of ``promptprof ci``) pairs the calls of the same prompt, item and
    repetition and shuffles the pairs (seeded by the base seed), so provider drift during the
    run hits both sides alike; ``sequential`` makes every base call before any candidate call.
    """
    keys = [
        [request_key(request) for request in _requests(side.bench, side.seed)]
        for side in (base, candidate)
    ]
    slots = call_order(order, keys[0], keys[1], base.seed)
    runs = await _run_sides([base, candidate], slots, profiler or open_profiler(None))
    return runs[0], runs[1]


def _by_prompt(
    prompts: Sequence[Prompt], records: Sequence[BenchRecord]
) -> dict[str, list[BenchRecord]]:
    return {
        prompt.id: [record for record in records if record.prompt_id == prompt.id]
        for prompt in prompts
    }


def summary(run: BenchRun) -> list[str]:
    """One line per prompt: calls, errors, median latency and mean quality."""
    lines = []
    for prompt_id, records in run.prompts.items():
        ok = [record for record in records if record.status == "ok"]
        latency = f"{np.median([r.latency_ms for r in ok]):.0f} ms" if ok else "-"
        scores = [r.quality_score for r in ok if r.quality_score is not None]
        metric = next((r.quality_metric for r in ok if r.quality_metric), None)
        quality = f", quality ({metric}) {np.mean(scores):.3f}" if scores else ""
        errors = len(records) - len(ok)
        lines.append(f"  {prompt_id}: {len(records)} calls, {errors} errors, "
                     f"latency p50 {latency}{quality}")
    return lines


def _all_failed(run: BenchRun) -> str | None:
    records = [record for records in run.prompts.values() for record in records]
    if any(record.status == "ok" for record in records):
        return None
    kinds = sorted({record.error_type or "unknown" for record in records})
    return f"every call failed ({', '.join(kinds)}): check the provider settings"


def bench_command(
    suite: Path, out: Path, seed: int | None, settings: Settings, prompt_dir: Path | None = None
) -> int:
    """``promptprof bench SUITE --out RUN.json [--seed N] [--prompt-dir DIR]``.

    Returns the exit code: 0 when the run file was written, 2 on a usage or input error (the
    reason on stderr), also when every call failed (the run file is still written).
    """
    try:
        bench = prepare(load_suite(suite), prompt_dir=prompt_dir)
        profiler = open_profiler(settings)
        if settings.producer.enabled and not profiler.publish:
            _warn(f"Kafka at {settings.kafka.bootstrap_servers} is not reachable: the calls are "
                  "not published, the run file is written as usual")
        run = asyncio.run(run_bench(bench, seed=seed, profiler=profiler,
                                    git_ref=head_commit(bench.suite.base_dir)))
        save_run(run, out)
    except (InputError, RunFileError) as exc:
        print(f"promptprof bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in bench.evaluators.failure_notes():
        _warn(note)
    print("\n".join([f"promptprof bench: suite {run.run.suite!r}, seed {run.run.seed}",
                     *summary(run), f"wrote {out}"]))
    failed = _all_failed(run)
    if failed:
        print(f"promptprof bench: error: {failed}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _warn(message: str) -> None:
    print(f"promptprof bench: warning: {message}", file=sys.stderr)
