"""The OpenAI-compatible and Anthropic providers, through the official clients, against the
local fake server: streaming and not, usage, errors, timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from promptprof.testing._fake_providers import DEFAULT_TEXT, FakeProviderServer, FakeReply
from promptprof_compare.runner import BenchRecord, BenchRun, prepare, run_bench
from promptprof_compare.suite import load_suite

from .conftest import PROMPT, make_suite

QA_PROMPT = {**PROMPT, "system": "Answer in one sentence.", "params": {"temperature": 0.1}}


def api_run(
    root: Path, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch, kind: str = "openai",
    *, stream: bool = True, **fields: Any,
) -> BenchRun:
    """Bench one prompt on 2 items x 2 repetitions against the fake server."""
    monkeypatch.setenv("FAKE_API_KEY", "test")
    base_url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    provider = {"type": kind, "base_url": base_url, "api_key_env": "FAKE_API_KEY",
                "stream": stream}
    suite_fields = {"repetitions": 2, "concurrency": 2, "timeout_s": 10, **fields}
    suite = make_suite(root, prompt_files=[QA_PROMPT], items=2, provider=provider,
                       evaluators=[{"type": "exact", "reference_field": "answer"}], **suite_fields)
    lines = (root / "data.jsonl").read_text().splitlines()
    (root / "data.jsonl").write_text("\n".join(
        line[:-1] + f', "answer": "{DEFAULT_TEXT}"}}' for line in lines) + "\n")
    return asyncio.run(run_bench(prepare(load_suite(suite)), seed=3))


def records(run: BenchRun) -> list[BenchRecord]:
    """The run's records of its one prompt."""
    return run.prompts["answer"]


def test_openai_stream_records_ttft_usage_cost_and_quality(
    tmp_path: Path, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = api_run(tmp_path, server, monkeypatch)
    assert run.run.provider == "openai" and len(records(run)) == 4
    for record in records(run):
        assert record.status == "ok"
        assert record.ttft_ms is not None and 0 < record.ttft_ms <= record.latency_ms
        assert (record.input_tokens, record.output_tokens) == (25, 9)
        assert record.cost_usd is not None and record.cost_usd > 0
        assert record.quality_scores == {"exact": 1.0} and record.quality_metric == "exact"
    body = server.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.1
    assert body["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
    assert body["messages"][1]["content"].startswith("Tell me about topic ")
    assert "promptprof" not in body


def test_openai_without_streaming_has_no_ttft(
    tmp_path: Path, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for record in records(api_run(tmp_path, server, monkeypatch, stream=False)):
        assert record.status == "ok" and record.ttft_ms is None
        assert record.quality_score == 1.0


def test_openai_errors_and_missing_usage(
    tmp_path: Path, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(FakeReply(status=429), FakeReply(usage=False))
    got = records(api_run(tmp_path, server, monkeypatch, concurrency=1))
    failed = [record for record in got if record.status == "error"]
    assert [record.error_type for record in failed] == ["RateLimitError"]
    assert failed[0].quality_score is None
    ok = [record for record in got if record.status == "ok"]
    estimated = [r for r in ok if (r.input_tokens, r.output_tokens) != (25, 9)]
    assert len(estimated) == 1 and estimated[0].output_tokens > 0


def test_openai_timeout_is_an_error(
    tmp_path: Path, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.default = FakeReply(delay_s=1.0)
    got = records(api_run(tmp_path, server, monkeypatch, timeout_s=0.2))
    assert {record.error_type for record in got} == {"APITimeoutError"}
    assert all(record.latency_ms < 1000 for record in got)


@pytest.mark.parametrize("stream", [True, False])
def test_anthropic_messages(
    tmp_path: Path, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    for record in records(api_run(tmp_path, server, monkeypatch, "anthropic", stream=stream)):
        assert record.status == "ok" and record.quality_score == 1.0
        assert (record.input_tokens, record.output_tokens) == (25, 9)
        assert (record.ttft_ms is not None) == stream
    body = server.requests[0].body
    assert body["system"] == "Answer in one sentence." and body["max_tokens"] == 1024
    assert body["temperature"] == 0.1  # not a keyword of this SDK's create(): sent in the body
