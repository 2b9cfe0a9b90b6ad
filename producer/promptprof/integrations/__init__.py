"""Wrappers that profile the official OpenAI and Anthropic clients, sync and async.

::

    from openai import OpenAI
    from promptprof.integrations import use_prompt, wrap_openai

    client = wrap_openai(OpenAI(), prompt_id="faq-answer", version="v3")
    client.chat.completions.create(model="gpt-4o-mini", messages=[...])   # profiled
    client.chat.completions.create(                                      # another version
        model="gpt-4o-mini", messages=[...], promptprof={"version": "v4"},
    )
    with use_prompt(version="v4"):                                       # same, type-checked
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

``wrap_openai`` and ``wrap_anthropic`` import their SDK on first use, so either SDK may be
missing when the other is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptprof.integrations._common import OVERRIDE_KWARG, PromptOverride, use_prompt

if TYPE_CHECKING:
    from promptprof.integrations._anthropic import wrap_anthropic
    from promptprof.integrations._openai import wrap_openai

__all__ = ["OVERRIDE_KWARG", "PromptOverride", "use_prompt", "wrap_anthropic", "wrap_openai"]


def __getattr__(name: str) -> Any:
    if name == "wrap_openai":
        from promptprof.integrations._openai import wrap_openai

        return wrap_openai
    if name == "wrap_anthropic":
        from promptprof.integrations._anthropic import wrap_anthropic

        return wrap_anthropic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
