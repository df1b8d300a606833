"""Cost maths in Decimal, with each provider's cached-token semantics normalised away.

`Usage` always uses the OpenAI convention: `input_tokens` is the whole prompt,
*including* cached reads and cache writes. Providers that report differently
(Anthropic's `input_tokens` excludes both) convert when they build a Usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from .catalog import Price

MILLION = Decimal(1_000_000)
MONEY_PLACES = Decimal("0.0000000001")


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.cached_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached and cache-write tokens cannot exceed input tokens")

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cached_tokens - self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


def quantize(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)


def cost_of(usage: Usage, price: Price | None) -> Decimal:
    """Dollar cost of `usage` at `price` (None: a free step such as the guardrail)."""
    if price is None:
        return Decimal(0).quantize(MONEY_PLACES)
    total = (
        Decimal(usage.uncached_input_tokens) * price.input_per_mtok
        + Decimal(usage.cached_tokens) * price.cached_input_per_mtok
        + Decimal(usage.cache_write_tokens) * price.cache_write_per_mtok
        + Decimal(usage.output_tokens) * price.output_per_mtok
    ) / MILLION
    return quantize(total)


def baseline_cost_of(usage: Usage, baseline: Price | None) -> Decimal:
    """What the same request would have cost on the baseline model without routing.

    The baseline gets the same prompt and output tokens and the same cached reads
    (caching is a property of the app's prompt, not of routing); there is no
    sentinel on the baseline path.
    """
    return cost_of(usage, baseline)
