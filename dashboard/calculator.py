"""What-if cost calculator: a pure function from a traffic scenario and prices to daily and monthly cost.

The model, per request (tokens are means):
- executor, on the route's model: uncached input × input price + cached input × cached price
  + output × output price, where cached input = input × cached share;
- sentinel, on the sentinel model, for every request: sentinel input × input price + sentinel
  output × output price (its prompt is not assumed cached);
- baseline, on the baseline model: the same executor tokens and cached share, no sentinel —
  as `routing.engine.pricing.baseline_cost_of` prices each logged request.
A model without a price (the guardrail chain) costs nothing and is listed in `unpriced`.

Exactness: every product and sum is an exact Decimal; each reported figure is then rounded
once to the cent, half up. Monthly = exact daily × days per month, then rounded; totals are
rounded from exact totals (so a total can differ by a cent from the sum of its rounded rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from routing.engine.catalog import Price

CENT = Decimal("0.01")
MILLION = Decimal(1_000_000)
HUNDRED = Decimal(100)


class ScenarioError(ValueError):
    pass


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class RouteAssumption:
    route: str
    share_percent: Decimal
    model: str


@dataclass(frozen=True)
class Scenario:
    requests_per_day: Decimal
    input_tokens: Decimal
    output_tokens: Decimal
    cached_input_percent: Decimal
    routes: tuple[RouteAssumption, ...]
    sentinel_model: str
    sentinel_input_tokens: Decimal
    sentinel_output_tokens: Decimal
    baseline_model: str
    days_per_month: int = 30


@dataclass(frozen=True)
class RouteLine:
    route: str
    model: str
    share_percent: Decimal
    requests_per_day: Decimal
    cost_per_request: Decimal  # exact
    daily: Decimal
    monthly: Decimal
    baseline_daily: Decimal
    baseline_monthly: Decimal
    savings_daily: Decimal
    savings_monthly: Decimal


@dataclass(frozen=True)
class Estimate:
    routes: list[RouteLine]
    sentinel_daily: Decimal
    sentinel_monthly: Decimal
    daily: Decimal
    monthly: Decimal
    baseline_daily: Decimal
    baseline_monthly: Decimal
    savings_daily: Decimal
    savings_monthly: Decimal
    savings_percent: Decimal | None
    unpriced: tuple[str, ...]


def _request_cost(price: Price | None, input_tokens: Decimal, cached: Decimal, output_tokens: Decimal) -> Decimal:
    if price is None:
        return Decimal(0)
    return ((input_tokens - cached) * price.input_per_mtok + cached * price.cached_input_per_mtok
            + output_tokens * price.output_per_mtok) / MILLION


def estimate(scenario: Scenario, prices: Mapping[str, Price]) -> Estimate:
    """Cost of `scenario` at `prices`, daily and monthly, routed and all-baseline (see module docstring)."""
    s = scenario
    for name in ("requests_per_day", "input_tokens", "output_tokens", "sentinel_input_tokens",
                 "sentinel_output_tokens"):
        if getattr(s, name) < 0:
            raise ScenarioError(f"{name} cannot be negative")
    if not Decimal(0) <= s.cached_input_percent <= HUNDRED:
        raise ScenarioError("the cached-input share must be between 0 and 100 %")
    if any(r.share_percent < 0 for r in s.routes) or sum((r.share_percent for r in s.routes), Decimal(0)) != HUNDRED:
        raise ScenarioError("route shares must be non-negative and add up to exactly 100 %")
    month = Decimal(s.days_per_month)
    cached = s.input_tokens * s.cached_input_percent / HUNDRED
    unpriced = sorted({m for m in [r.model for r in s.routes] + [s.sentinel_model, s.baseline_model]
                       if m not in prices})
    baseline_per_request = _request_cost(prices.get(s.baseline_model), s.input_tokens, cached, s.output_tokens)
    lines = []
    executor_total = Decimal(0)
    for r in s.routes:
        requests = s.requests_per_day * r.share_percent / HUNDRED
        per_request = _request_cost(prices.get(r.model), s.input_tokens, cached, s.output_tokens)
        daily = requests * per_request
        baseline = requests * baseline_per_request
        executor_total += daily
        lines.append(RouteLine(
            route=r.route, model=r.model, share_percent=r.share_percent, requests_per_day=requests,
            cost_per_request=per_request, daily=cents(daily), monthly=cents(daily * month),
            baseline_daily=cents(baseline), baseline_monthly=cents(baseline * month),
            savings_daily=cents(baseline - daily), savings_monthly=cents((baseline - daily) * month),
        ))
    sentinel_price = prices.get(s.sentinel_model)
    sentinel = s.requests_per_day * _request_cost(sentinel_price, s.sentinel_input_tokens, Decimal(0),
                                                  s.sentinel_output_tokens)
    total = executor_total + sentinel
    baseline_total = s.requests_per_day * baseline_per_request
    saved = baseline_total - total
    return Estimate(
        routes=lines,
        sentinel_daily=cents(sentinel), sentinel_monthly=cents(sentinel * month),
        daily=cents(total), monthly=cents(total * month),
        baseline_daily=cents(baseline_total), baseline_monthly=cents(baseline_total * month),
        savings_daily=cents(saved), savings_monthly=cents(saved * month),
        savings_percent=(saved * HUNDRED / baseline_total).quantize(CENT, rounding=ROUND_HALF_UP)
        if baseline_total else None,
        unpriced=tuple(unpriced),
    )
