"""bench_command and the simulated provider: the example suite offline, honest simulated
latencies, reproducible seeds, Kafka publishing without ever waiting on an absent broker."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from promptprof import Profiler
from promptprof_compare.cli import EXIT_OK, EXIT_USAGE
from promptprof_compare.runfile import load_run
from promptprof_compare.runner import (
    BenchRun,
    bench_command,
    open_profiler,
    prepare,
    run_bench,
)
from promptprof_compare.suite import load_suite

from .conftest import make_suite, offline_settings

EXAMPLE_SUITE = Path(__file__).parents[2] / "examples" / "suites" / "support.yaml"


def simulated(root: Path, seed: int = 5, **provider: Any) -> BenchRun:
    """A small run of the default test suite on the simulated provider."""
    suite = make_suite(root, provider={"type": "simulated", **provider}, items=10)
    return asyncio.run(run_bench(prepare(load_suite(suite)), seed=seed))


def test_example_suite_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.json"
    assert bench_command(EXAMPLE_SUITE, out, None, offline_settings()) == EXIT_OK
    run = load_run(out)
    assert run.run.suite == "support" and run.run.provider == "simulated"
    assert set(run.prompts) == {"support_reply", "ticket_summary"}
    raw = out.read_text()
    for evaluator in ("rouge_l", "chrf", "keywords", "thanks"):
        assert f'"{evaluator}":' in raw
    reply = run.prompts["support_reply"]
    assert {record.prompt_version for record in reply} == {"v1"}
    assert all(r.quality_metric == "rouge_l" for r in reply if r.status == "ok")
    assert all(r.cost_usd for r in reply if r.status == "ok")  # gpt-4o-mini has a known price
    out_text = capsys.readouterr().out
    assert "support_reply: 100 calls" in out_text and f"wrote {out}" in out_text


def test_seed_option_wins_over_the_suite_seed(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    assert bench_command(EXAMPLE_SUITE, out, 99, offline_settings()) == EXIT_OK
    assert load_run(out).run.seed == 99


def test_simulated_latency_is_the_drawn_figure_whatever_the_time_scale(tmp_path: Path) -> None:
    instant = simulated(tmp_path / "a", time_scale=0)
    started = time.perf_counter()
    waited = simulated(tmp_path / "b", time_scale=0.002)
    assert time.perf_counter() - started > 0.01  # it really slept
    pairs = zip(instant.prompts["answer"], waited.prompts["answer"], strict=True)
    for fast, slow in pairs:
        assert fast.status == slow.status
        assert slow.latency_ms == pytest.approx(fast.latency_ms, abs=1.0)
        assert (fast.input_tokens, fast.output_tokens) == (slow.input_tokens, slow.output_tokens)
        if fast.status == "ok":
            assert fast.latency_ms > 100  # the simulated model's latency, not ~0 wall time
            assert fast.ttft_ms is not None and slow.ttft_ms is not None
            assert slow.ttft_ms == pytest.approx(fast.ttft_ms, abs=1.0)
            assert fast.ttft_ms < fast.latency_ms


def test_same_seed_same_draws_other_seed_other_draws(tmp_path: Path) -> None:
    def draws(run: BenchRun) -> list[tuple[int, float | None]]:
        return [(r.output_tokens, r.quality_score) for r in run.prompts["answer"]]

    first, again = simulated(tmp_path / "a", seed=1), simulated(tmp_path / "b", seed=1)
    assert draws(first) == draws(again)
    assert draws(simulated(tmp_path / "c", seed=2)) != draws(first)


def test_simulated_timeout_and_total_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = make_suite(tmp_path, timeout_s=0.05)
    out = tmp_path / "run.json"
    assert bench_command(suite, out, None, offline_settings()) == EXIT_USAGE
    assert {r.error_type for r in load_run(out).prompts["answer"]} <= {
        "TimeoutError", "SimulatedRateLimit", "SimulatedTimeout", "SimulatedServerError"
    }
    assert "every call failed (" in capsys.readouterr().err


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_kafka_does_not_slow_the_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = offline_settings(enabled=True, close_timeout_s=30)
    settings.kafka.bootstrap_servers = f"127.0.0.1:{free_port()}"
    started = time.perf_counter()
    assert bench_command(make_suite(tmp_path), tmp_path / "run.json", None, settings) == EXIT_OK
    assert time.perf_counter() - started < 10
    assert "is not reachable: the calls are not published" in capsys.readouterr().err


def test_reachable_kafka_gets_every_call_and_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the producer would publish (its sender is replaced by a list here)."""
    published: list[Any] = []
    monkeypatch.setattr(Profiler, "enqueue", lambda self, item: published.append(item))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        settings = offline_settings(enabled=True)
        settings.kafka.bootstrap_servers = f"127.0.0.1:{listener.getsockname()[1]}"
        profiler = open_profiler(settings)
    assert profiler.publish
    suite = make_suite(tmp_path, items=4)
    run = asyncio.run(run_bench(prepare(load_suite(suite)), profiler=profiler))
    records = run.prompts["answer"]
    calls = [item for item in published if not isinstance(item, tuple)]
    scores = [item for item in published if isinstance(item, tuple) and item[0] == "quality"]
    assert len(calls) == len(records) == 12
    assert len(scores) == sum(r.quality_score is not None for r in records)
    assert {call.spec.labels["bench_suite"] for call in calls} == {"suite"}
