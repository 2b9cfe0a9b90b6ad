"""Cost per call from the genai-prices table.

``genai_prices.calc_price`` takes about 100 µs a call, so flat per-token prices are looked up
once per (provider, model) and applied with plain float arithmetic; models with tiered prices
go through the exact calculation. An unknown model costs ``None``, never a guess.

The provider narrows the lookup when genai-prices knows it (``openai``, ``anthropic``, and the
OpenTelemetry names it maps, such as ``azure.ai.openai`` or ``aws.bedrock``); a provider it does
not know (``unknown``, the default of ``track()`` without ``provider=``, or a private gateway's
name) is ignored and the model alone identifies the price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

_PER_TOKEN = 1e-6  # prices are per million tokens


@dataclass(frozen=True, slots=True)
class FlatPrice:
    """USD per token for a model whose prices do not depend on the context length."""

    input: float
    output: float
    cache_read: float

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int) -> float:
        """Cost in USD; ``input_tokens`` includes the cached ones."""
        uncached = max(input_tokens - cached_tokens, 0)
        return uncached * self.input + cached_tokens * self.cache_read + output_tokens * self.output


def call_cost(
    provider: str, model: str, input_tokens: int | None, output_tokens: int | None,
    cached_tokens: int | None = None,
) -> float | None:
    """USD cost of one call, or ``None`` when the model or the token counts are unknown."""
    if input_tokens is None or output_tokens is None:
        return None
    price = _price_for(provider, model)
    if price is None:
        return None
    cached = cached_tokens or 0
    if isinstance(price, FlatPrice):
        return price.cost(input_tokens, output_tokens, cached)
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached)
    return float(price.calc_price(usage)["total_price"])


def known_provider(provider: str) -> str | None:
    """The genai-prices id of ``provider``, or ``None`` when genai-prices does not know it."""
    found = find_provider_by_id(get_snapshot().providers, provider) if provider else None
    return found.id if found is not None else None


@lru_cache(maxsize=1024)
def _price_for(provider: str, model: str) -> FlatPrice | Any | None:
    try:
        found = calc_price(
            Usage(input_tokens=0, output_tokens=0),
            model_ref=model,
            provider_id=known_provider(provider),
        )
    except LookupError:
        return None
    model_price = found.model_price
    inp_rate: Any = getattr(model_price, "input_mtok", None)
    out_rate: Any = getattr(model_price, "output_mtok", None)
    cache: Any = getattr(model_price, "cache_read_mtok", None)
    flat = isinstance(inp_rate, Decimal) and isinstance(out_rate, Decimal)
    if flat and (cache is None or isinstance(cache, Decimal)):  # tiered prices need calc_price
        inp, out = float(inp_rate) * _PER_TOKEN, float(out_rate) * _PER_TOKEN
        cached = float(cache) * _PER_TOKEN if cache is not None else inp
        return FlatPrice(input=inp, output=out, cache_read=cached)
    return model_price
