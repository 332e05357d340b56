"""Presets for OpenAI-compatible vendors: a provider config needs only `type` and `api_key`.

Data, not code: each preset names the adapter and the vendor's default base URL (a config's own
`base_url` and `headers` win). Quirks beyond the URL belong here as the adapters learn them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Rewrite = Callable[[dict[str, Any]], None]

THINKING_BUDGETS: Mapping[str, int] = MappingProxyType({"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576})


def qwen_thinking(body: dict[str, Any]) -> None:
    """DashScope: `reasoning_effort` becomes Qwen's `enable_thinking` and `thinking_budget`."""
    effort = body.pop("reasoning_effort", None)
    if effort is None:
        return
    body["enable_thinking"] = effort != "none"
    if effort in THINKING_BUDGETS:
        body["thinking_budget"] = THINKING_BUDGETS[effort]


@dataclass(frozen=True, slots=True)
class Preset:
    adapter: str
    """The adapter type this preset configures."""
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    rewrite: Rewrite | None = None
    """Adjusts the canonical request to the vendor's parameters (in place), before it is sent."""
    responses_api: bool = False
    """The vendor serves the Responses API (`/responses`), so `/v1/responses` passes through."""


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "deepseek": Preset("openai", "https://api.deepseek.com/v1"),
        "qwen": Preset("openai", "https://dashscope.aliyuncs.com/compatible-mode/v1", rewrite=qwen_thinking),
        "zhipu": Preset("openai", "https://open.bigmodel.cn/api/paas/v4"),
        "qianfan": Preset("openai", "https://qianfan.baidubce.com/v2"),
        "moonshot": Preset("openai", "https://api.moonshot.cn/v1"),
        "doubao": Preset("openai", "https://ark.cn-beijing.volces.com/api/v3"),
        "vllm": Preset("openai", "http://127.0.0.1:8000/v1", responses_api=True),
        "ollama": Preset("openai", "http://127.0.0.1:11434/v1"),
    }
)
