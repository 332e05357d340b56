"""The README's provider tables against the adapters: default upstream URLs, which types pass the Responses API
through, and the supported/unsupported cells against what each adapter declares and does.

End-to-end proof of each supported cell is in tests/e2e/test_matrix_*.py and the adapter suites; this file pins
the facts that need no server (a vendor's real URL cannot be called from a test).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.config.loader import parse_config
from gateway.errors import InvalidRequest
from gateway.upstream.client import Timeouts
from plugins.providers.anthropic.adapter import AnthropicAdapter
from plugins.providers.base import AdapterSettings, CallContext, ProviderAdapter
from plugins.providers.gemini.adapter import GeminiAdapter
from plugins.providers.openai.adapter import OpenAIAdapter
from plugins.providers.openai.azure import AzureOpenAIAdapter
from plugins.providers.presets import PRESETS
from plugins.providers.registry import ADAPTERS, NEEDS_BASE_URL, create_adapter, provider_types

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
PROVIDERS_SECTION = README.split("\n## Providers\n", 1)[1].split("\n## ", 1)[0]

# The presets table of the README, as it reads today.
PRESET_URLS = {
    "deepseek": "https://api.deepseek.com/v1",
    "qwen": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "zhipu": "https://open.bigmodel.cn/api/paas/v4",
    "qianfan": "https://qianfan.baidubce.com/v2",
    "moonshot": "https://api.moonshot.cn/v1",
    "doubao": "https://ark.cn-beijing.volces.com/api/v3",
    "vllm": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}


def adapter(provider_yaml: str) -> ProviderAdapter:
    cfg = parse_config(f"providers:\n  p: {provider_yaml}\n", provider_types(), env={}, needs_base_url=NEEDS_BASE_URL)
    return create_adapter("p", cfg.providers["p"], client=object(), settings=AdapterSettings())  # type: ignore[arg-type]


def table_rows(header_start: str) -> list[dict[str, str]]:
    """The rows of the Providers section's table whose header row starts with `header_start`, by column name."""
    lines = PROVIDERS_SECTION.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    columns = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def name_of(cell: str) -> str:
    match = re.fullmatch(r"`([a-z_]+)`", cell)
    assert match, cell
    return match.group(1)


# --- default upstreams --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "url"), sorted(PRESET_URLS.items()))
def test_type_and_key_are_enough_the_preset_knows_the_url(preset: str, url: str) -> None:
    made = adapter(f"{{type: {preset}, api_key: sk-test-123456789}}")
    assert isinstance(made, OpenAIAdapter) and not isinstance(made, AzureOpenAIAdapter)
    assert made.base_url == url
    assert made.url("/chat/completions", "m") == url + "/chat/completions"


def test_the_readme_lists_exactly_the_presets_with_their_urls() -> None:
    listed = {name_of(row["type"]): row for row in table_rows("| type | vendor |")}
    assert set(listed) == set(PRESETS) == set(PRESET_URLS)
    for name, row in listed.items():
        first_url = re.search(r"`(https?://[^`]+)`", row["default base URL (Responses API)"])
        assert first_url and first_url.group(1) == PRESETS[name].base_url, name


def test_vendor_default_urls_and_key_headers() -> None:
    openai_default = adapter("{type: openai, api_key: sk-a}")
    assert isinstance(openai_default, OpenAIAdapter)
    assert openai_default.url("/chat/completions", "gpt-4o") == "https://api.openai.com/v1/chat/completions"
    assert openai_default._headers["Authorization"] == "Bearer sk-a"
    claude = adapter("{type: anthropic, api_key: sk-b}")
    assert isinstance(claude, AnthropicAdapter)
    assert claude.url == "https://api.anthropic.com/v1/messages"
    assert claude._headers["x-api-key"] == "sk-b"
    gemini = adapter("{type: gemini, api_key: sk-c}")
    assert isinstance(gemini, GeminiAdapter)
    assert gemini.base_url == "https://generativelanguage.googleapis.com"
    assert gemini._headers["x-goog-api-key"] == "sk-c"


def test_azure_deployment_url_with_the_default_api_version_and_api_key_header() -> None:
    azure = adapter("{type: azure_openai, base_url: 'https://res.openai.azure.com', api_key: sk-d}")
    assert isinstance(azure, AzureOpenAIAdapter)
    assert azure.url("/embeddings", "my dep") == (
        "https://res.openai.azure.com/openai/deployments/my%20dep/embeddings?api-version=2024-10-21"
    )
    assert azure._headers["api-key"] == "sk-d" and "Authorization" not in azure._headers
    pinned = adapter("{type: azure_openai, base_url: 'https://res.openai.azure.com', api_version: 2025-01-01-preview}")
    assert isinstance(pinned, AzureOpenAIAdapter)
    assert pinned.url("/completions", "d").endswith("/openai/deployments/d/completions?api-version=2025-01-01-preview")


# --- the Responses API column -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_yaml", "passes_through"),
    [
        ("{type: openai}", True),  # OpenAI's own URL
        ("{type: openai, responses_api: false}", False),
        ("{type: openai, base_url: 'http://10.0.0.5:8000/v1'}", False),  # a compatible server: translated
        ("{type: openai, base_url: 'http://10.0.0.5:8000/v1', responses_api: true}", True),  # ... unless it opts in
        ("{type: vllm}", True),
        ("{type: vllm, base_url: 'http://10.0.0.5:8000/v1'}", True),
        ("{type: vllm, responses_api: false}", False),
        *((f"{{type: {name}}}", False) for name in sorted(PRESETS) if name != "vllm"),
        ("{type: deepseek, responses_api: true}", True),
        ("{type: azure_openai, base_url: 'https://res.openai.azure.com'}", False),  # translated
        ("{type: azure_openai, base_url: 'https://res.openai.azure.com', responses_api: true}", False),
        ("{type: gemini}", False),  # translated
        ("{type: anthropic}", False),  # translated
    ],
)
def test_which_providers_take_the_responses_api_as_it_is(provider_yaml: str, passes_through: bool) -> None:
    assert adapter(provider_yaml).speaks_responses is passes_through


# --- supported and unsupported cells ------------------------------------------------------------------------------

COLUMNS = ("chat", "stream", "tools", "vision", "reasoning", "completions", "embeddings")


def test_the_readme_matrix_matches_what_each_adapter_declares() -> None:
    rows = {name_of(row["type"]): row for row in table_rows("| type | upstreams |")}
    assert set(rows) == set(ADAPTERS)
    for name, row in rows.items():
        declared = ADAPTERS[name].capabilities
        for column in COLUMNS:
            supported = row[column] != "no"
            assert getattr(declared, column) is supported, f"{name}.{column}: README says {row[column]!r}"


@pytest.mark.parametrize(
    ("provider_yaml", "operation"),
    [
        ("{type: gemini}", "completions"),
        ("{type: gemini}", "completions_stream"),
        ("{type: anthropic}", "completions"),
        ("{type: anthropic}", "completions_stream"),
        ("{type: anthropic}", "embeddings"),
    ],
)
def test_cells_marked_no_are_a_clear_400_before_any_upstream_call(provider_yaml: str, operation: str) -> None:
    made = adapter(provider_yaml)  # its client is a bare object: any upstream call would fail differently
    ctx = CallContext("req_test", "m", Timeouts(connect=1, first_byte=1, idle=1, total=1))
    with pytest.raises(InvalidRequest) as caught:
        asyncio.run(getattr(made, operation)({"model": "m", "prompt": "x", "input": "x"}, ctx))
    assert caught.value.status == 400
    assert caught.value.code == "unsupported_operation"
    assert "does not support" in caught.value.message
