"""``host_us_p99_stream_without_usage``: what the OpenAI wrapper adds on the host's thread to a
streamed chat completion whose API returns no usage (OpenAI's default).

The client is a real ``openai.OpenAI`` whose ``chat.completions.create`` returns a replayed
``openai.Stream`` of :data:`CHUNKS` ``ChatCompletionChunk`` objects (2 KB of generated text in
all, no usage) for a 2 KB prompt; no network is involved, so what is timed is the SDK objects'
iteration and the wrapper's own work. ``bare`` is that client unwrapped; ``wrapped`` the same
client after ``wrap_openai`` with the given profiler (whose sender runs). Each call, from
``create`` to the end of the stream, is timed on its own; the two variants alternate in rounds,
the profiler flushed between rounds outside the timed region. ``host_us_p99_stream_without_usage
= p99(wrapped) - p99(bare)``, p50 likewise; ``stream_sent_events`` counts the events the profiler
sent meanwhile (each call's tokens estimated from its texts, on the sender's thread).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import _common
import openai
from openai.types.chat import ChatCompletionChunk

from promptprof import Profiler
from promptprof.integrations import wrap_openai

CHUNKS = 20
PROMPT = [
    {"role": "system", "content": "s" * 1024},
    {"role": "user", "content": [{"type": "text", "text": "u" * 1024}]},
]


def _chunk(i: int, text: str) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({
        "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    } if i < CHUNKS else {
        "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    })


REPLAY = [_chunk(i, f"{i:02d}" + "r" * 100) for i in range(CHUNKS + 1)]


class _Replay(openai.Stream[ChatCompletionChunk]):
    """An ``openai.Stream`` that replays :data:`REPLAY` (no HTTP response behind it)."""

    def __init__(self) -> None:  # the SDK's constructor needs an HTTP response
        self._chunks = iter(REPLAY)

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self._chunks

    def __next__(self) -> ChatCompletionChunk:
        return next(self._chunks)

    def close(self) -> None:
        """Nothing to release."""


def _client() -> openai.OpenAI:
    client = openai.OpenAI(api_key="bench", base_url="http://127.0.0.1:9/v1", max_retries=0)

    def create(**_: Any) -> _Replay:
        return _Replay()

    client.chat.completions.create = create  # type: ignore[method-assign,assignment]
    return client


def _time(client: openai.OpenAI, n: int) -> list[int]:
    out = [0] * n
    perf = time.perf_counter_ns
    create = client.chat.completions.create
    for i in range(n):
        t0 = perf()
        for _ in create(model="gpt-4o-mini", messages=PROMPT, stream=True):  # type: ignore[arg-type]
            pass
        out[i] = perf() - t0
    return out


def figures(profiler: Profiler, calls: int, rounds: int) -> dict[str, float | int]:
    """Time ``calls`` streamed calls of each variant in ``rounds`` alternating rounds."""
    bare = _client()
    wrapped = wrap_openai(_client(), prompt_id="bench-stream", version="1", profiler=profiler)
    for client in (bare, wrapped):
        _time(client, 500)  # warm up
    profiler.flush(30.0)
    sent_before = profiler.stats()["sent_events"]
    samples: dict[str, list[int]] = {"bare": [], "wrapped": []}
    chunk = calls // rounds
    for r in range(rounds):
        order = ["bare", "wrapped"] if r % 2 == 0 else ["wrapped", "bare"]
        for name in order:
            samples[name] += _time(bare if name == "bare" else wrapped, chunk)
        profiler.flush(30.0)
    pct = {}
    for name, ns in samples.items():
        ns.sort()
        pct[name] = (_common.percentile(ns, 50) / 1e3, _common.percentile(ns, 99) / 1e3)
    return {
        "host_us_p50_stream_without_usage": pct["wrapped"][0] - pct["bare"][0],
        "host_us_p99_stream_without_usage": pct["wrapped"][1] - pct["bare"][1],
        "stream_bare_us_p50": pct["bare"][0],
        "stream_calls": chunk * rounds,
        "stream_sent_events": profiler.stats()["sent_events"] - sent_before,
    }
