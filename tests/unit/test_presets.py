"""Vendor presets: a type and a key are enough; a config's own URL and headers win."""

from __future__ import annotations

import pytest

from gateway.config.loader import ConfigError, parse_config
from plugins.providers.base import AdapterSettings
from plugins.providers.openai.adapter import OpenAIAdapter
from plugins.providers.presets import PRESETS, qwen_thinking
from plugins.providers.registry import create_adapter, provider_types


def _adapter(provider_yaml: str) -> OpenAIAdapter:
    cfg = parse_config(f"providers:\n  p: {provider_yaml}\n", provider_types(), env={})
    adapter = create_adapter("p", cfg.providers["p"], client=object(), settings=AdapterSettings())
    assert isinstance(adapter, OpenAIAdapter)
    return adapter


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_type_with_a_base_url(name: str) -> None:
    adapter = _adapter(f"{{type: {name}, api_key: sk-test-123456789}}")
    assert adapter.base_url == PRESETS[name].base_url
    assert adapter.base_url.startswith(("https://", "http://127.0.0.1"))


def test_known_vendor_urls() -> None:
    assert _adapter("{type: deepseek}").base_url == "https://api.deepseek.com/v1"
    assert _adapter("{type: qwen}").base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert _adapter("{type: qianfan}").base_url == "https://qianfan.baidubce.com/v2"


def test_config_overrides_the_preset() -> None:
    adapter = _adapter("{type: vllm, base_url: 'http://10.1.2.3:9000/v1', headers: {X-A: b}}")
    assert adapter.base_url == "http://10.1.2.3:9000/v1"
    assert adapter.config.headers == {"X-A": "b"}


def test_unknown_type_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match="deepseek"):
        parse_config("providers:\n  p: {type: nosuch}\n", provider_types(), env={})


@pytest.mark.parametrize(
    ("effort", "expected"),
    [
        ("high", {"enable_thinking": True, "thinking_budget": 24576}),
        ("low", {"enable_thinking": True, "thinking_budget": 1024}),
        ("none", {"enable_thinking": False}),
    ],
)
def test_qwen_maps_reasoning_effort_to_enable_thinking(effort: str, expected: dict[str, object]) -> None:
    body = {"model": "qwen3", "reasoning_effort": effort}
    qwen_thinking(body)
    assert body == {"model": "qwen3", **expected}


def test_qwen_leaves_requests_without_effort_alone() -> None:
    body = {"model": "qwen3", "temperature": 0.1}
    qwen_thinking(body)
    assert body == {"model": "qwen3", "temperature": 0.1}
