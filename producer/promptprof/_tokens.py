"""Token counts for calls whose API returned no usage, marked as estimated.

tiktoken is used when it is installed and its encoding can be loaded (it downloads encodings on
first use unless they are cached, see ``TIKTOKEN_CACHE_DIR``); otherwise about four characters
make a token, the rule of thumb OpenAI documents for English text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

CHARS_PER_TOKEN = 4


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...


def estimate_tokens(text: str, model: str = "") -> int:
    """Tokens in ``text`` for ``model``: exact with tiktoken, else a character estimate."""
    if not text:
        return 0
    encoding = _encoding_for(model)
    if encoding is not None:
        return len(encoding.encode(text, disallowed_special=()))
    return max(1, round(len(text) / CHARS_PER_TOKEN))


@lru_cache(maxsize=64)
def _encoding_for(model: str) -> _Encoding | None:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        encoding: _Encoding = tiktoken.encoding_for_model(model)
        return encoding
    except KeyError:
        pass
    except Exception:  # no network and no cached encoding
        return None
    try:
        fallback: _Encoding = tiktoken.get_encoding("o200k_base")
        return fallback
    except Exception:
        return None
