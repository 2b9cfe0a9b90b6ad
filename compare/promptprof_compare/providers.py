"""The providers a bench suite can run against, and how one call is made through the profiler.

``provider`` in a suite is one of::

    provider: {type: openai, base_url: http://localhost:8000/v1, api_key_env: OPENAI_API_KEY}
    provider: {type: anthropic, api_key_env: ANTHROPIC_API_KEY}
    provider:
      type: simulated
      time_scale: 0            # how long to really wait: 0 never, 1 the simulated latency
      models:              # per model ("*": any), promptprof_tools.simulate.ModelProfile knobs
        gpt-4o-mini: {latency_median_ms: 700, output_tokens_mean: 90, quality_mean: 0.8}
      inject: {latency_factor: 1.3}   # a change applied on top, to rehearse a regression

The OpenAI-compatible and Anthropic backends use the official async clients wrapped by
:mod:`promptprof.integrations`, so every call is measured by the same code as in production.
The simulated backend measures through :meth:`Profiler.track`. Its latency and TTFT are the
figures the simulated provider drew, whatever ``time_scale`` is: once the simulated call
returns, the call's start and first-token marks are moved back by the drawn latency and TTFT
(the call still ends when it really ends), so a run without waiting records the same figures
as one that waits in real time. A failed simulated call keeps its measured wall time, divided
by ``time_scale`` when that is positive. Input tokens are drawn around the token count of the
rendered prompt, and the answer text is the item's ``reference`` with each word kept with the
drawn quality as probability (other words replaced), so reference-based evaluators see the
simulated quality; without a reference the provider's placeholder text is returned.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from promptprof import Call, Profiler
from promptprof._tokens import estimate_tokens
from promptprof_compare.dataset import Item
from promptprof_compare.inputs import InputError
from promptprof_compare.prompts import Prompt, Rendered
from promptprof_tools.simulate import Completion, ModelProfile, SimulatedError, SimulatedProvider

if TYPE_CHECKING:  # the SDKs are optional extras, imported when a suite uses them
    import anthropic
    import openai

ANY_MODEL = "*"
FILLER_WORD = "lorem"
QUALITY_BOUNDS = (0.01, 0.99)
DEFAULT_MAX_TOKENS = 1024
TIMEOUT_GRACE_S = 5.0
_NS_PER_MS = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiProviderConfig(_Strict):
    """An API reached with an official client: endpoint, key variable, streaming, retries."""

    base_url: str | None = Field(default=None, description="Endpoint; the vendor's by default.")
    api_key_env: str = Field(min_length=1, description="Environment variable with the API key.")
    stream: bool = Field(default=True, description="Stream the answer (measures TTFT).")
    max_retries: int = Field(default=0, ge=0, le=10, description="Client retries per call.")

    def api_key(self) -> str:
        """The API key from the environment; raise :class:`InputError` when it is not set."""
        key = os.environ.get(self.api_key_env)
        if not key:
            raise InputError("provider.api_key_env", f"environment variable {self.api_key_env} "
                             "is not set (it must hold the API key)")
        return key


class OpenAIConfig(ApiProviderConfig):
    """An OpenAI-compatible chat completions endpoint."""

    type: Literal["openai"]
    api_key_env: str = Field(default="OPENAI_API_KEY", min_length=1)

    def client(self, timeout_s: float) -> openai.AsyncOpenAI:
        """A new async client (not profiled)."""
        import openai

        return openai.AsyncOpenAI(
            api_key=self.api_key(), base_url=self.base_url, max_retries=self.max_retries,
            timeout=timeout_s,
        )


class AnthropicConfig(ApiProviderConfig):
    """The Anthropic messages API."""

    type: Literal["anthropic"]
    api_key_env: str = Field(default="ANTHROPIC_API_KEY", min_length=1)

    def client(self, timeout_s: float) -> anthropic.AsyncAnthropic:
        """A new async client (not profiled)."""
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=self.api_key(), base_url=self.base_url, max_retries=self.max_retries,
            timeout=timeout_s,
        )


class SimulatedModel(_Strict):
    """Knobs of one simulated model; unset ones keep :class:`ModelProfile`'s defaults."""

    provider: str | None = Field(default=None, min_length=1, description="Vendor for prices.")
    latency_median_ms: float | None = Field(default=None, gt=0)
    latency_sigma: float | None = Field(default=None, ge=0)
    ttft_fraction: float | None = Field(default=None, gt=0, le=1)
    ms_per_output_token: float | None = Field(default=None, ge=0)
    output_tokens_mean: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    quality_mean: float | None = Field(default=None, gt=0, lt=1)
    quality_concentration: float | None = Field(default=None, gt=0)


class Injection(_Strict):
    """A change applied on top of every simulated model, to rehearse a regression."""

    latency_factor: float = Field(default=1.0, gt=0, description="Multiplies all latencies.")
    output_tokens_factor: float = Field(default=1.0, gt=0, description="Multiplies output tokens.")
    error_rate: float | None = Field(default=None, ge=0, le=1, description="Replaces the rate.")
    quality_shift: float = Field(default=0.0, ge=-1, le=1, description="Subtracted from quality.")

    def apply(self, profile: ModelProfile) -> ModelProfile:
        """``profile`` with this change."""
        low, high = QUALITY_BOUNDS
        return replace(
            profile,
            latency_median_ms=profile.latency_median_ms * self.latency_factor,
            ms_per_output_token=profile.ms_per_output_token * self.latency_factor,
            output_tokens_mean=profile.output_tokens_mean * self.output_tokens_factor,
            error_rate=profile.error_rate if self.error_rate is None else self.error_rate,
            quality_mean=min(high, max(low, profile.quality_mean - self.quality_shift)),
        )


class SimulatedConfig(_Strict):
    """The built-in simulated provider: seeded distributions per model, no network."""

    type: Literal["simulated"]
    time_scale: float = Field(default=0.0, ge=0, le=10, description="Real wait per simulated.")
    models: dict[str, SimulatedModel] = Field(default_factory=dict)
    inject: Injection = Field(default_factory=Injection)
    reference_field: str = Field(default="reference", min_length=1)

    def profile(self, model: str, input_tokens: int) -> ModelProfile:
        """The behaviour of ``model`` for a prompt of ``input_tokens`` tokens."""
        knobs = self.models.get(model) or self.models.get(ANY_MODEL) or SimulatedModel()
        settings = knobs.model_dump(exclude_none=True)
        profile = ModelProfile(model=model, input_tokens_mean=float(input_tokens), **settings)
        return self.inject.apply(profile)


ProviderConfig = Annotated[
    OpenAIConfig | AnthropicConfig | SimulatedConfig, Field(discriminator="type")
]


@dataclass(frozen=True)
class Request:
    """One call to make: a prompt rendered for an item, its repetition and its seed."""

    prompt: Prompt
    rendered: Rendered
    item: Item
    repetition: int
    seed: int


class Backend(Protocol):
    """Makes calls through the profiler and returns the answer text."""

    @property
    def deadline_s(self) -> float | None:
        """Wall-clock limit of one call, or ``None`` when the backend enforces its own."""

    async def complete(self, request: Request) -> str:
        """Make the call; raise the provider's exception when it fails."""

    async def aclose(self) -> None:
        """Release the client."""


def call_seed(seed: int, prompt_id: str, item_id: str, repetition: int) -> int:
    """A per-call seed, so draws do not depend on the order in which calls are scheduled."""
    key = f"{seed}\0{prompt_id}\0{item_id}\0{repetition}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def api_options(create: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """A prompt's ``params`` as keyword arguments of the client method ``create``; the ones it
    does not name (a newer or vendor-specific option) are sent in the body via ``extra_body``."""
    accepted = inspect.signature(create).parameters
    options = {key: value for key, value in params.items() if key in accepted}
    extra = {key: value for key, value in params.items() if key not in accepted}
    if extra:
        options["extra_body"] = {**extra, **options.get("extra_body", {})}
    return options


def messages(rendered: Rendered) -> list[dict[str, str]]:
    """Chat messages (OpenAI format) of a rendered prompt."""
    system = [{"role": "system", "content": rendered.system}] if rendered.system else []
    return [*system, {"role": "user", "content": rendered.user}]


class OpenAIBackend:
    """Chat completions through the wrapped official ``AsyncOpenAI`` client."""

    def __init__(
        self, config: OpenAIConfig, profiler: Profiler, timeout_s: float, labels: Mapping[str, str]
    ) -> None:
        from promptprof.integrations import wrap_openai

        self._client = wrap_openai(
            config.client(timeout_s), prompt_id="bench", version="0", labels=labels,
            profiler=profiler,
        )
        self._stream = config.stream
        self.deadline_s: float | None = timeout_s + TIMEOUT_GRACE_S

    async def complete(self, request: Request) -> str:
        """One chat completion; streamed with usage in the last chunk when configured."""
        prompt = request.prompt
        create: Any = self._client.chat.completions.create  # params come from the prompt file
        kwargs = {
            **api_options(create, prompt.params), "model": prompt.model,
            "messages": messages(request.rendered),
            "promptprof": {"prompt_id": prompt.id, "version": prompt.version},
        }
        if not self._stream:
            response = await create(**kwargs)
            return str(response.choices[0].message.content or "") if response.choices else ""
        stream = await create(**kwargs, stream=True, stream_options={"include_usage": True})
        parts = [
            choice.delta.content
            async for chunk in stream
            for choice in chunk.choices
            if choice.delta.content
        ]
        return "".join(parts)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


class AnthropicBackend:
    """Messages through the wrapped official ``AsyncAnthropic`` client."""

    def __init__(
        self, config: AnthropicConfig, profiler: Profiler, timeout_s: float,
        labels: Mapping[str, str],
    ) -> None:
        from promptprof.integrations import wrap_anthropic

        self._client = wrap_anthropic(
            config.client(timeout_s), prompt_id="bench", version="0", labels=labels,
            profiler=profiler,
        )
        self._stream = config.stream
        self.deadline_s: float | None = timeout_s + TIMEOUT_GRACE_S

    async def complete(self, request: Request) -> str:
        """One message; streamed as raw events when configured."""
        prompt, rendered = request.prompt, request.rendered
        create: Any = self._client.messages.create  # params come from the prompt file
        kwargs: dict[str, Any] = {
            "max_tokens": DEFAULT_MAX_TOKENS, **api_options(create, prompt.params),
            "model": prompt.model,
            "messages": [{"role": "user", "content": rendered.user}],
            "promptprof": {"prompt_id": prompt.id, "version": prompt.version},
        }
        if rendered.system:
            kwargs["system"] = rendered.system
        if not self._stream:
            response = await create(**kwargs)
            return "".join(block.text for block in response.content if block.type == "text")
        stream = await create(**kwargs, stream=True)
        parts = [
            event.delta.text
            async for event in stream
            if event.type == "content_block_delta" and event.delta.type == "text_delta"
        ]
        return "".join(parts)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


class SimulatedBackend:
    """Calls of :class:`~promptprof_tools.simulate.SimulatedProvider`, measured with ``track``."""

    deadline_s: float | None = None  # the drawn latency is checked against the timeout instead

    def __init__(
        self, config: SimulatedConfig, profiler: Profiler, timeout_s: float,
        labels: Mapping[str, str],
    ) -> None:
        self._config = config
        self._profiler = profiler
        self._timeout_ms = timeout_s * 1000
        self._labels = labels

    async def complete(self, request: Request) -> str:
        """One simulated call; raise a ``SimulatedError`` or ``TimeoutError`` when it fails."""
        prompt, config = request.prompt, self._config
        profile = config.profile(prompt.model, _tokens(request.rendered.text, prompt.model))
        provider = SimulatedProvider(seed=request.seed, time_scale=config.time_scale)
        async with self._profiler.track(
            prompt.id, prompt.version, model=prompt.model,
            provider=prompt.provider or profile.provider, labels=self._labels,
        ) as call:
            completion = await self._draw(provider, profile, call)
        rng = random.Random(request.seed ^ 0x5EED)
        reference = request.item.field(config.reference_field)
        return simulated_text(reference, completion.quality, rng) or completion.text

    async def _draw(
        self, provider: SimulatedProvider, profile: ModelProfile, call: Call
    ) -> Completion:
        started = time.perf_counter_ns()
        try:
            completion = await provider.complete(profile, call)
        except SimulatedError:
            self._scale_back(call, started)
            raise
        call.quality = call.quality_metric = None  # the bench's evaluators score the answer
        if completion.latency_ms > self._timeout_ms:
            _move_start(call, self._timeout_ms, None)
            raise TimeoutError(f"simulated call took {completion.latency_ms:.0f} ms")
        _move_start(call, completion.latency_ms, completion.ttft_ms)
        return completion

    def _scale_back(self, call: Call, started_ns: int) -> None:
        scale = self._config.time_scale
        if scale > 0:
            elapsed_ms = (time.perf_counter_ns() - started_ns) / _NS_PER_MS
            _move_start(call, elapsed_ms / scale, None)

    async def aclose(self) -> None:
        """Nothing to release."""


def _move_start(call: Call, latency_ms: float, ttft_ms: float | None) -> None:
    """Put the call's start ``latency_ms`` before now, and its first token ``ttft_ms`` after."""
    call.start_ns = time.perf_counter_ns() - round(latency_ms * _NS_PER_MS)
    call.first_token_ns = None if ttft_ms is None else call.start_ns + round(ttft_ms * _NS_PER_MS)


@lru_cache(maxsize=4096)
def _tokens(text: str, model: str) -> int:
    return max(1, estimate_tokens(text, model))


def simulated_text(reference: Any, quality: float, rng: random.Random) -> str | None:
    """The reference with each word (or each listed string) kept with probability ``quality``."""
    if isinstance(reference, str) and reference.strip():
        words = reference.split()
        return " ".join(word if rng.random() < quality else FILLER_WORD for word in words)
    if isinstance(reference, list) and reference and all(isinstance(r, str) for r in reference):
        return ". ".join(part if rng.random() < quality else FILLER_WORD for part in reference)
    return None


def open_backend(
    config: ProviderConfig, profiler: Profiler, timeout_s: float, labels: Mapping[str, str]
) -> Backend:
    """The backend for a suite's provider."""
    if isinstance(config, OpenAIConfig):
        return OpenAIBackend(config, profiler, timeout_s, labels)
    if isinstance(config, AnthropicConfig):
        return AnthropicBackend(config, profiler, timeout_s, labels)
    return SimulatedBackend(config, profiler, timeout_s, labels)
