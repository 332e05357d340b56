"""The shipped default prices: vendors' public list prices per 1M tokens, as data.

These are list prices as of AS_OF, for the standard (non-batch, shortest-context) tier; vendors change them
often, and a model's `pricing` in the gateway config overrides them. Each row is
`(input, cached_input or None, output)` or `(input, cached_input or None, output, reasoning)`, as decimal
strings so no float rounding creeps in. Lookup also matches dated variants by prefix (see `pricing.py`), so a
row is needed only where a longer name is priced differently from its prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

AS_OF: Final = "2025-11"

Row = tuple[str, str | None, str] | tuple[str, str | None, str, str]

USD: Final[Mapping[str, Row]] = MappingProxyType(
    {
        # OpenAI
        "gpt-5": ("1.25", "0.125", "10.00"),
        "gpt-5-mini": ("0.25", "0.025", "2.00"),
        "gpt-5-nano": ("0.05", "0.005", "0.40"),
        "gpt-5-pro": ("15.00", None, "120.00"),
        "gpt-4.1": ("2.00", "0.50", "8.00"),
        "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
        "gpt-4.1-nano": ("0.10", "0.025", "0.40"),
        "gpt-4o": ("2.50", "1.25", "10.00"),
        "gpt-4o-mini": ("0.15", "0.075", "0.60"),
        "gpt-4-turbo": ("10.00", None, "30.00"),
        "gpt-4-1106-preview": ("10.00", None, "30.00"),
        "gpt-4-0125-preview": ("10.00", None, "30.00"),
        "gpt-4": ("30.00", None, "60.00"),
        "gpt-3.5-turbo": ("0.50", None, "1.50"),
        "o1": ("15.00", "7.50", "60.00"),
        "o1-mini": ("1.10", "0.55", "4.40"),
        "o1-pro": ("150.00", None, "600.00"),
        "o3": ("2.00", "0.50", "8.00"),
        "o3-mini": ("1.10", "0.55", "4.40"),
        "o3-pro": ("20.00", None, "80.00"),
        "o4-mini": ("1.10", "0.275", "4.40"),
        "text-embedding-3-small": ("0.02", None, "0"),
        "text-embedding-3-large": ("0.13", None, "0"),
        "text-embedding-ada-002": ("0.10", None, "0"),
        # Anthropic (cached_input is the cache-read price)
        "claude-opus-4-5": ("5.00", "0.50", "25.00"),
        "claude-opus-4": ("15.00", "1.50", "75.00"),
        "claude-sonnet-4": ("3.00", "0.30", "15.00"),
        "claude-haiku-4-5": ("1.00", "0.10", "5.00"),
        "claude-3-7-sonnet": ("3.00", "0.30", "15.00"),
        "claude-3-5-sonnet": ("3.00", "0.30", "15.00"),
        "claude-3-5-haiku": ("0.80", "0.08", "4.00"),
        "claude-3-opus": ("15.00", "1.50", "75.00"),
        "claude-3-haiku": ("0.25", "0.03", "1.25"),
        # Google Gemini (prompts up to 200k tokens)
        "gemini-2.5-pro": ("1.25", "0.125", "10.00"),
        "gemini-2.5-flash": ("0.30", "0.03", "2.50"),
        "gemini-2.5-flash-lite": ("0.10", "0.01", "0.40"),
        "gemini-2.0-flash": ("0.10", "0.025", "0.40"),
        "gemini-2.0-flash-lite": ("0.075", None, "0.30"),
    }
)

CNY: Final[Mapping[str, Row]] = MappingProxyType(
    {
        # DeepSeek (V3.2; both models share one price; cached_input is the cache-hit price)
        "deepseek-chat": ("2", "0.2", "3"),
        "deepseek-reasoner": ("2", "0.2", "3"),
        # Alibaba Qwen (DashScope; implicit cache hits bill at 20% of input; thinking-mode output as reasoning)
        "qwen-max": ("2.4", "0.48", "9.6"),
        "qwen-plus": ("0.8", "0.16", "2", "8"),
        "qwen-turbo": ("0.3", "0.06", "0.6", "3"),
        "qwen-long": ("0.5", None, "2"),
        # Zhipu GLM
        "glm-4-plus": ("5", None, "5"),
        "glm-4-air": ("0.5", None, "0.5"),
        "glm-4-flash": ("0", None, "0"),
        "glm-4-long": ("1", None, "1"),
        "glm-4.5": ("2", "0.4", "8"),
        "glm-4.5-air": ("0.8", "0.16", "2"),
        # Baidu ERNIE (Qianfan)
        "ernie-4.0-8k": ("30", None, "90"),
        "ernie-4.0-turbo-8k": ("20", None, "60"),
        "ernie-4.5-turbo-128k": ("0.8", None, "3.2"),
        "ernie-3.5-8k": ("0.8", None, "2"),
        "ernie-speed-8k": ("0", None, "0"),
        "ernie-lite-8k": ("0", None, "0"),
        # Moonshot (Kimi)
        "moonshot-v1-8k": ("2", None, "10"),
        "moonshot-v1-32k": ("5", None, "20"),
        "moonshot-v1-128k": ("10", None, "30"),
        "kimi-k2": ("4", "1", "16"),
        "kimi-k2-turbo": ("8", "1", "58"),
        "kimi-k2-thinking-turbo": ("8", "1", "58"),
        # ByteDance Doubao (Volcengine Ark)
        "doubao-pro-4k": ("0.8", None, "2"),
        "doubao-pro-32k": ("0.8", "0.16", "2"),
        "doubao-pro-128k": ("5", None, "9"),
        "doubao-pro-256k": ("5", None, "9"),
        "doubao-lite-4k": ("0.3", None, "0.6"),
        "doubao-lite-32k": ("0.3", "0.06", "0.6"),
        "doubao-lite-128k": ("0.8", None, "1"),
        "doubao-1.5-pro-32k": ("0.8", "0.16", "2"),
        "doubao-1.5-pro-256k": ("5", None, "9"),
        "doubao-1.5-lite-32k": ("0.3", "0.06", "0.6"),
    }
)

BY_CURRENCY: Final[Mapping[str, Mapping[str, Row]]] = MappingProxyType({"USD": USD, "CNY": CNY})
