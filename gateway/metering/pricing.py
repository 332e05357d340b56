"""Prices per 1M tokens, the cost of one request, and the table that finds a model's price.

The shipped defaults (`price_list.py`) are vendors' public list prices as of `price_list.AS_OF`; a config's
`pricing` for a model overrides them. Costs are `Decimal`, in the price's own currency, never negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final, Literal, cast, get_args

from gateway.metering import price_list
from gateway.metering.usage import MAX_TOKENS

Currency = Literal["USD", "CNY", "EUR"]
CURRENCIES: Final = frozenset(get_args(Currency))
PER_TOKENS: Final = Decimal(1_000_000)
QUANTUM: Final = Decimal("1E-10")
PREFIX_SEPARATORS: Final = ("-", "@", ":")
"""Where a dated or tagged variant may extend a priced name (`gpt-4o-2024-08-06`, `claude-sonnet-4@20250514`)."""

Amount = Decimal | int | float | str


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price per 1M tokens; cached input and reasoning default to the input and output prices."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    reasoning: Decimal | None = None
    currency: Currency = "USD"

    def __post_init__(self) -> None:
        for value in (self.input, self.output, self.cached_input, self.reasoning):
            if value is not None and (not isinstance(value, Decimal) or not value.is_finite() or value < 0):
                raise ValueError(f"a price must be a finite, non-negative Decimal, not {value!r}")
        if self.currency not in CURRENCIES:
            raise ValueError(f"unknown currency {self.currency!r}")

    @classmethod
    def of(
        cls,
        input: Amount,
        output: Amount,
        cached_input: Amount | None = None,
        reasoning: Amount | None = None,
        currency: str = "USD",
    ) -> Price:
        """A price from numbers or decimal strings (e.g. a config's floats), converted exactly as written."""
        if currency not in CURRENCIES:
            raise ValueError(f"unknown currency {currency!r}")
        return cls(
            _decimal(input),
            _decimal(output),
            None if cached_input is None else _decimal(cached_input),
            None if reasoning is None else _decimal(reasoning),
            cast(Currency, currency),
        )


def _decimal(value: Amount) -> Decimal:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a price must be finite, not {value!r}")
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {value!r}") from exc


def clamp_tokens(count: object) -> int:
    """A token count fit to bill: an int in [0, MAX_TOKENS]; anything else (negative, absurd, not an int) is 0."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_TOKENS:
        return 0
    return count


def cost(
    price: Price, prompt_tokens: int, cached_tokens: int, completion_tokens: int, reasoning_tokens: int
) -> Decimal:
    """What one request costs: cached tokens are part of the prompt, reasoning tokens part of the completion.

    Counts are clamped (see `clamp_tokens`), subsets to their totals; the result has 10 decimal places.
    """
    prompt = clamp_tokens(prompt_tokens)
    cached = min(clamp_tokens(cached_tokens), prompt)
    completion = clamp_tokens(completion_tokens)
    reasoning = min(clamp_tokens(reasoning_tokens), completion)
    cached_price = price.input if price.cached_input is None else price.cached_input
    reasoning_price = price.output if price.reasoning is None else price.reasoning
    total = (
        (prompt - cached) * price.input
        + cached * cached_price
        + (completion - reasoning) * price.output
        + reasoning * reasoning_price
    )
    return (total / PER_TOKENS).quantize(QUANTUM, rounding=ROUND_HALF_UP)


def default_prices() -> dict[str, Price]:
    """The shipped list prices as `Price` objects, keyed by model name."""
    prices: dict[str, Price] = {}
    for currency, rows in price_list.BY_CURRENCY.items():
        for model, row in rows.items():
            reasoning = row[3] if len(row) == 4 else None
            prices[model] = Price.of(row[0], row[2], row[1], reasoning, currency)
    return prices


class PriceTable:
    """Finds the price of an upstream model name: exact, then the longest priced prefix, then without a vendor path.

    Built once (shipped defaults plus overrides), read-only afterwards, so it can be shared freely.
    """

    def __init__(
        self, overrides: Mapping[str, Price] | None = None, defaults: Mapping[str, Price] | None = None
    ) -> None:
        base = default_prices() if defaults is None else dict(defaults)
        merged = {**base, **(overrides or {})}
        self._prices: Mapping[str, Price] = MappingProxyType({_key(name): price for name, price in merged.items()})

    def __len__(self) -> int:
        return len(self._prices)

    def lookup(self, model: str) -> Price | None:
        """The price for `model` (`gpt-4o-2024-08-06` finds `gpt-4o`, `openai/gpt-4o` too); None if unpriced."""
        name = _key(model)
        found = self._match(name)
        if found is None and "/" in name:
            found = self._match(name.rsplit("/", 1)[1])
        return found

    def _match(self, name: str) -> Price | None:
        if name in self._prices:
            return self._prices[name]
        for prefix in _prefixes(name):
            if prefix in self._prices:
                return self._prices[prefix]
        return None


def _key(name: str) -> str:
    return name.strip().lower()


def _prefixes(name: str) -> Iterator[str]:
    """`a-b-c` gives `a-b`, then `a`: each prefix that ends just before a separator, longest first."""
    end = len(name)
    while (end := max(name.rfind(sep, 0, end) for sep in PREFIX_SEPARATORS)) > 0:
        yield name[:end]
