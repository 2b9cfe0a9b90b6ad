"""Each evaluator's score on known answers; failures are counted, not raised; the LLM judge."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from promptprof.testing._fake_providers import FakeProviderServer, FakeReply
from promptprof_compare.dataset import Item
from promptprof_compare.evaluators import EvaluatorConfig, Sample, Scorer

CONFIG: TypeAdapter[Any] = TypeAdapter(EvaluatorConfig)
REFERENCE = "The cat sat on the mat."


def build(config: dict[str, Any], base_dir: Path = Path(".")) -> Scorer:
    """The scorer of an evaluator's settings, as a suite lists them."""
    scorer: Scorer = CONFIG.validate_python(config).build(base_dir)
    return scorer


def score(scorer: Scorer, output: str, **fields: Any) -> float | None:
    """The scorer's score for ``output`` on an item with ``fields``."""
    data = {"id": "i", "input": {"q": "x"}, "reference": REFERENCE, **fields}
    item = Item("i", 1, data["input"], data)
    return asyncio.run(scorer.score(Sample(output, item, "the prompt")))


def test_exact() -> None:
    assert score(build({"type": "exact"}), "  The cat sat on the mat. ") == 1.0
    assert score(build({"type": "exact"}), "the cat sat on the mat.") == 0.0
    assert score(build({"type": "exact", "ignore_case": True}), "THE CAT SAT ON THE MAT.") == 1.0
    assert score(build({"type": "exact"}), "b", reference=["a", "b"]) == 1.0


def test_contains_is_the_fraction_of_references_found() -> None:
    scorer = build({"type": "contains", "reference_field": "keywords"})
    assert score(scorer, "Refund within 5 DAYS", keywords=["refund", "5 days"]) == 1.0
    assert score(scorer, "A refund is coming", keywords=["refund", "5 days"]) == 0.5
    assert score(scorer, "nothing", keywords="refund") == 0.0


def test_regex() -> None:
    assert score(build({"type": "regex", "pattern": r"\bthanks?\b", "ignore_case": True}),
                 "Thanks a lot") == 1.0
    assert score(build({"type": "regex", "pattern": r"\d+", "full_match": True}), "12a") == 0.0


def test_json_valid_and_schema() -> None:
    assert score(build({"type": "json_valid"}), '```json\n{"a": 1}\n```') == 1.0
    assert score(build({"type": "json_valid"}), "{'a': 1}") == 0.0
    schema = {"type": "object", "required": ["label"],
              "properties": {"label": {"enum": ["billing", "bug"]}}}
    scorer = build({"type": "json_schema", "schema": schema})
    assert score(scorer, '{"label": "bug"}') == 1.0
    assert score(scorer, '{"label": "other"}') == 0.0
    assert score(scorer, "not json") == 0.0


@pytest.mark.parametrize("kind", ["rouge_l", "bleu", "chrf"])
def test_reference_overlap_scores(kind: str) -> None:
    scorer = build({"type": kind})
    assert score(scorer, REFERENCE) == pytest.approx(1.0)
    partial = score(scorer, "The cat sat on a rug.")
    assert partial is not None and 0.0 < partial < 1.0
    assert score(scorer, "Completely unrelated words here") == pytest.approx(0.0, abs=0.2)


def test_custom_function_gets_output_and_item(tmp_path: Path) -> None:
    (tmp_path / "my_checks.py").write_text(
        "def length(output, item):\n    return min(1.0, len(output) / item['target'])\n"
        "def broken(output, item):\n    raise ValueError('boom')\n"
        "def too_big(output, item):\n    return 3\n"
    )
    assert score(build({"type": "custom", "function": "my_checks:length"}, tmp_path),
                 "abcd", target=8) == 0.5
    for name, reason in [("broken", "ValueError: boom"), ("too_big", "outside 0..1")]:
        scorer = build({"type": "custom", "function": f"my_checks:{name}"}, tmp_path)
        assert score(scorer, "x") is None
        assert scorer.failures == 1
        assert scorer.first_failure is not None and reason in scorer.first_failure


def test_judge_prompt_variables_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown variables"):
        CONFIG.validate_python({"type": "judge", "model": "m", "provider": {"type": "openai"},
                                "prompt": "Grade {answer}"})


def judge(server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Scorer:
    """A judge evaluator against the fake OpenAI-compatible server."""
    monkeypatch.setenv("JUDGE_KEY", "test")
    provider = {"type": "openai", "base_url": server.openai_base_url, "api_key_env": "JUDGE_KEY"}
    return build({"type": "judge", "model": "gpt-4o-mini", "provider": provider, **extra})


async def _score_and_close(scorer: Scorer, output: str) -> float | None:
    item = Item("i", 1, {"q": "x"}, {"reference": REFERENCE})
    try:
        return await scorer.score(Sample(output, item, "What did the cat do?"))
    finally:
        await scorer.aclose()


def test_judge_through_the_openai_client(
    server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(FakeReply(text="8"))
    scorer = judge(server, monkeypatch, params={"temperature": 0})
    assert asyncio.run(_score_and_close(scorer, "It sat on the mat.")) == pytest.approx(0.8)
    body = server.requests[0].body
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    question = body["messages"][0]["content"]
    assert "What did the cat do?" in question and REFERENCE in question
    assert "It sat on the mat." in question


def test_judge_reply_without_a_number_is_counted(
    server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(FakeReply(text="excellent!"), FakeReply(text="7 out of 5"))
    scorer = judge(server, monkeypatch, scale=5)
    assert asyncio.run(_score_and_close(scorer, "x")) is None
    assert asyncio.run(_score_and_close(scorer, "x")) is None  # 7/5 is above the scale
    assert scorer.failures == 2
