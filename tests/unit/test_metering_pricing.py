"""Prices: cost arithmetic in Decimal, clamping, and the table's exact and prefix lookups."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from gateway.metering import price_list
from gateway.metering.pricing import Price, PriceTable, clamp_tokens, cost, default_prices
from gateway.metering.usage import MAX_TOKENS

GPT_4O = Price.of("2.50", "10.00", cached_input="1.25")


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable()


def test_price_of_converts_exactly() -> None:
    price = Price.of(0.1, 0.3, cached_input=0.025, reasoning=1, currency="CNY")
    assert price == Price(Decimal("0.1"), Decimal("0.3"), Decimal("0.025"), Decimal("1"), "CNY")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input": -1, "output": 1},
        {"input": 1, "output": float("nan")},
        {"input": 1, "output": float("inf")},
        {"input": "abc", "output": 1},
        {"input": 1, "output": 1, "cached_input": -0.5},
        {"input": 1, "output": 1, "currency": "JPY"},
    ],
)
def test_price_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Price.of(**kwargs)  # type: ignore[arg-type]


def test_price_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPT_4O.input = Decimal(0)  # type: ignore[misc]


def test_cost_plain() -> None:
    assert cost(GPT_4O, 1000, 0, 500, 0) == Decimal("0.0075000000")


def test_cached_tokens_are_a_subset_of_the_prompt() -> None:
    # 600 fresh at 2.50 + 400 cached at 1.25 + 500 out at 10.00, per 1M
    assert cost(GPT_4O, 1000, 400, 500, 0) == Decimal("0.0070000000")


def test_cached_without_a_cached_price_bills_at_input() -> None:
    price = Price.of(2, 8)
    assert cost(price, 1000, 400, 0, 0) == cost(price, 1000, 0, 0, 0) == Decimal("0.0020000000")


def test_reasoning_tokens_are_a_subset_of_the_completion() -> None:
    price = Price.of("0.8", "2", cached_input="0.16", reasoning="8", currency="CNY")
    # 400 answer tokens at 2 + 600 reasoning tokens at 8, per 1M
    assert cost(price, 0, 0, 1000, 600) == Decimal("0.0056000000")
    assert cost(GPT_4O, 0, 0, 1000, 600) == cost(GPT_4O, 0, 0, 1000, 0)  # no reasoning price: output price


def test_cost_in_cny() -> None:
    deepseek = PriceTable().lookup("deepseek-chat")
    assert deepseek is not None
    assert deepseek.currency == "CNY"
    # 800k fresh at 2 + 200k cache hits at 0.2 + 100k out at 3
    assert cost(deepseek, 1_000_000, 200_000, 100_000, 0) == Decimal("1.9400000000")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((-5, 0, 1000, 0), "0.0100000000"),  # a negative prompt counts as 0
        ((1000, 5000, 0, 0), "0.0012500000"),  # cached beyond the prompt: all of the prompt is cached
        ((0, 0, 1000, 9000), "0.0100000000"),  # reasoning beyond the completion
        ((MAX_TOKENS + 1, 0, 1000, 0), "0.0100000000"),  # absurd
        ((True, 0, 1000, 0), "0.0100000000"),  # not a count
        ((1000.0, 0, 1000, 0), "0.0100000000"),  # not an int
        ((0, -3, 0, -3), "0E-10"),
    ],
)
def test_cost_clamps_counts(args: tuple[int, int, int, int], expected: str) -> None:
    result = cost(GPT_4O, *args)
    assert result == Decimal(expected)
    assert result >= 0


def test_cost_is_quantized_to_ten_places() -> None:
    assert cost(Price.of("0.075", "0"), 1, 0, 0, 0) == Decimal("0.0000000750")
    tiny = cost(Price.of("0.00015", "0"), 1, 0, 0, 0)  # 1.5e-10 rounds half up
    assert tiny == Decimal("0.0000000002")
    assert tiny.as_tuple().exponent == -10


def test_cost_of_the_largest_request_is_exact() -> None:
    price = Price.of("150", "600")
    assert cost(price, MAX_TOKENS, 0, MAX_TOKENS, 0) == Decimal("7500.0000000000")


@pytest.mark.parametrize("value", [0, 1, MAX_TOKENS])
def test_clamp_keeps_sane_counts(value: int) -> None:
    assert clamp_tokens(value) == value


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("GPT-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-2025-04-16", "o3"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("qwen-plus-2025-07-28", "qwen-plus"),
        ("kimi-k2-0905-preview", "kimi-k2"),
        ("kimi-k2-turbo-preview", "kimi-k2-turbo"),
        ("doubao-pro-32k-241215", "doubao-pro-32k"),
        ("glm-4-flash-250414", "glm-4-flash"),
    ],
)
def test_lookup_exact_and_prefix(table: PriceTable, model: str, expected: str) -> None:
    assert table.lookup(model) == default_prices()[expected]


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4.5-preview",  # a dot is no separator: not priced as gpt-4
        "ft:gpt-4o-mini:acme::abc",  # fine-tunes cost more: no guess
        "my-local-llama",
        "gpt",
        "",
        "-",
        "qwen2.5-72b-instruct",
    ],
)
def test_unpriced_models_are_none(table: PriceTable, model: str) -> None:
    assert table.lookup(model) is None


def test_overrides_win_and_add_models() -> None:
    mine = Price.of("1", "2", currency="CNY")
    table = PriceTable({"gpt-4o": mine, "My-Model": mine})
    assert table.lookup("gpt-4o") is mine
    assert table.lookup("gpt-4o-2024-08-06") is mine
    assert table.lookup("my-model") is mine
    assert table.lookup("gpt-4o-mini") == default_prices()["gpt-4o-mini"]
    assert len(table) == len(default_prices()) + 1


def test_explicit_defaults_replace_the_shipped_table() -> None:
    table = PriceTable(defaults={"a": GPT_4O})
    assert table.lookup("a-1") is GPT_4O
    assert table.lookup("gpt-4o") is None


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-opus-4",
        "claude-sonnet-4",
        "claude-3-5-haiku",
        "claude-haiku-4-5",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.0-flash",
        "deepseek-chat",
        "deepseek-reasoner",
        "qwen-max",
        "qwen-plus",
        "qwen-turbo",
        "glm-4-plus",
        "glm-4-flash",
        "ernie-4.0-8k",
        "moonshot-v1-8k",
        "moonshot-v1-32k",
        "moonshot-v1-128k",
        "kimi-k2",
        "doubao-pro-32k",
    ],
)
def test_shipped_table_covers_the_common_models(table: PriceTable, model: str) -> None:
    assert model in default_prices()
    price = table.lookup(model)
    assert price is not None
    assert price.output >= 0


@pytest.mark.parametrize(
    ("prefix", "currency"),
    [
        ("gpt-", "USD"),
        ("claude-", "USD"),
        ("gemini-", "USD"),
        ("qwen-", "CNY"),
        ("glm-", "CNY"),
        ("ernie-", "CNY"),
        ("moonshot-", "CNY"),
        ("doubao-", "CNY"),
        ("deepseek-", "CNY"),
    ],
)
def test_currencies_by_vendor(prefix: str, currency: str) -> None:
    prices = [p for name, p in default_prices().items() if name.startswith(prefix)]
    assert prices
    assert {p.currency for p in prices} == {currency}


def test_every_shipped_row_is_well_formed() -> None:
    for rows in price_list.BY_CURRENCY.values():
        for model, row in rows.items():
            assert model == model.lower().strip()
            assert len(row) in (3, 4)
    prices = default_prices()
    assert len(prices) == sum(len(rows) for rows in price_list.BY_CURRENCY.values())
    for price in prices.values():
        if price.cached_input is not None:
            assert price.cached_input <= price.input
