"""The what-if calculator against hand-computed cases, exact to the cent (half up)."""

from decimal import Decimal as D

import pytest

from dashboard.calculator import RouteAssumption, Scenario, ScenarioError, estimate
from routing.engine.catalog import Price

PRICES = {
    "claude-haiku-4-5": Price("claude-haiku-4-5", D("1.00"), D("5.00"), D("0.10"), D("1.25")),
    "claude-opus-4-7": Price("claude-opus-4-7", D("5.00"), D("25.00"), D("0.50"), D("6.25")),
}


def scenario(**overrides) -> Scenario:
    values = dict(
        requests_per_day=D(1000), input_tokens=D(1000), output_tokens=D(500), cached_input_percent=D(20),
        routes=(RouteAssumption("simple_qa", D(60), "claude-haiku-4-5"),
                RouteAssumption("complex_reasoning", D(40), "claude-opus-4-7")),
        sentinel_model="claude-haiku-4-5", sentinel_input_tokens=D(300), sentinel_output_tokens=D(50),
        baseline_model="claude-opus-4-7",
    )
    values.update(overrides)
    return Scenario(**values)


def test_a_two_route_mix_by_hand():
    """Per request: haiku 800×1 + 200×0.10 + 500×5 = 3,320 µ$ → $0.00332; opus 800×5 + 200×0.5 + 500×25
    = 16,600 µ$ → $0.0166; sentinel 300×1 + 50×5 = 550 µ$. Per day: 600 × 0.00332 = 1.992,
    400 × 0.0166 = 6.64, sentinel 0.55; total 9.182; baseline 1000 × 0.0166 = 16.60."""
    result = estimate(scenario(), PRICES)
    haiku, opus = result.routes
    assert (haiku.requests_per_day, haiku.daily, haiku.monthly) == (D(600), D("1.99"), D("59.76"))
    assert (opus.daily, opus.monthly) == (D("6.64"), D("199.20"))
    assert (haiku.baseline_daily, opus.baseline_daily) == (D("9.96"), D("6.64"))
    assert haiku.savings_daily == D("7.97")  # 9.96 − 1.992 = 7.968
    assert (result.sentinel_daily, result.sentinel_monthly) == (D("0.55"), D("16.50"))
    assert (result.daily, result.monthly) == (D("9.18"), D("275.46"))  # 9.182 × 30 = 275.46
    assert (result.baseline_daily, result.baseline_monthly) == (D("16.60"), D("498.00"))
    assert (result.savings_daily, result.savings_monthly) == (D("7.42"), D("222.54"))  # 7.418 and 222.54
    assert result.savings_percent == D("44.69")  # 7.418 / 16.6 = 44.686…%
    assert result.unpriced == ()


def test_half_a_cent_rounds_up():
    """One request of 1,000 output tokens on haiku costs exactly $0.005: half up gives $0.01 (banker's: $0.00)."""
    result = estimate(scenario(requests_per_day=D(1), input_tokens=D(0), output_tokens=D(1000),
                               routes=(RouteAssumption("simple_qa", D(100), "claude-haiku-4-5"),),
                               sentinel_input_tokens=D(0), sentinel_output_tokens=D(0)), PRICES)
    assert result.routes[0].daily == D("0.01")
    assert result.routes[0].monthly == D("0.15")  # 0.005 × 30
    assert result.baseline_daily == D("0.03")  # 1000 × 25 / 1e6 = 0.025 → 0.03


def test_totals_are_rounded_from_exact_values_not_summed_from_rounded_rows():
    """Two routes at $0.004 a day each: rows show $0.00, the total of $0.008 shows $0.01."""
    result = estimate(scenario(requests_per_day=D(2), input_tokens=D(0), output_tokens=D(800),
                               routes=(RouteAssumption("a", D(50), "claude-haiku-4-5"),
                                       RouteAssumption("b", D(50), "claude-haiku-4-5")),
                               sentinel_input_tokens=D(0), sentinel_output_tokens=D(0)), PRICES)
    assert [r.daily for r in result.routes] == [D("0.00"), D("0.00")]
    assert result.daily == D("0.01")


def test_an_unpriced_model_is_free_and_reported():
    result = estimate(scenario(routes=(RouteAssumption("refusal_required", D(100), "guardrail"),),
                               sentinel_input_tokens=D(0), sentinel_output_tokens=D(0)), PRICES)
    assert result.daily == D("0.00")
    assert result.baseline_daily == D("16.60")
    assert result.unpriced == ("guardrail",)


def test_everything_cached_uses_the_cached_price():
    result = estimate(scenario(cached_input_percent=D(100), output_tokens=D(0), sentinel_input_tokens=D(0),
                               sentinel_output_tokens=D(0),
                               routes=(RouteAssumption("simple_qa", D(100), "claude-haiku-4-5"),)), PRICES)
    assert result.daily == D("0.10")  # 1000 requests × 1000 tokens × $0.10 / 1M


@pytest.mark.parametrize("overrides", [
    {"routes": (RouteAssumption("a", D("99.99"), "claude-haiku-4-5"),)},
    {"cached_input_percent": D(101)},
    {"requests_per_day": D(-1)},
])
def test_impossible_scenarios_are_refused(overrides):
    with pytest.raises(ScenarioError):
        estimate(scenario(**overrides), PRICES)
