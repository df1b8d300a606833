"""Property tests (hypothesis) of the policy engine and of the cost maths.

Policy: whatever the decision, the route returned exists in the catalog; below the threshold the
answer is the fallback (never a cheap route); escalation is monotonic in confidence; an override
never buys a cheaper route; the outcome is deterministic and independent of registry order.

Cost: OpenAI and Gemini count cached tokens inside the prompt, Anthropic's `input_tokens` excludes
cache reads and writes; the same underlying billing normalises to the same `Usage` and the same
cost. Costs are non-negative Decimals quantised to exactly 10 places, additive and monotonic in
tokens, and a cached read never costs more than the same token uncached.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import yaml
from hypothesis import assume, given, settings, strategies as st

from routing.engine.catalog import Catalog, PolicySettings, Price, RouteSpec
from routing.engine.decision import RouteDecision
from routing.engine.policy import apply_policy
from routing.engine.pricing import MONEY_PLACES, Usage, cost_of
from routing.providers.anthropic import usage_from_anthropic
from routing.providers.gemini import usage_from_gemini
from routing.providers.openai import usage_from_openai

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "routing" / "catalog" / "default.yaml"
GUARDRAIL = "refusal_required"


def default_catalog() -> Catalog:
    doc = yaml.safe_load(DEFAULT_YAML.read_text())
    routes = {r["name"]: RouteSpec(name=r["name"], description=r["description"], provider=r["provider"],
                                   model=r["model"], model_version=r["model_version"],
                                   max_output_tokens=r["max_output_tokens"], fallback=r["fallback"],
                                   cheap_tier=r["cheap_tier"]) for r in doc["routes"]}
    prices = {p["model"]: Price(p["model"], Decimal(p["input"]), Decimal(p["output"]), Decimal(p["cached_input"]),
                                Decimal(p["cache_write"])) for p in doc["prices"]}
    return Catalog(routes=routes, prices=prices, baseline_model=doc["baseline_model"])


DEFAULT = default_catalog()
DEFAULT_PRICES = list(DEFAULT.prices.values())

# ---- strategies ---------------------------------------------------------------------------------

route_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@st.composite
def catalogs(draw) -> tuple[Catalog, PolicySettings]:
    """A registry that holds the policy's fallback route and the guardrail route (what catalog
    validation and the proposal workflow guarantee), plus random others in random order."""
    names = draw(st.lists(route_names.filter(lambda n: n != GUARDRAIL), min_size=1, max_size=6, unique=True))
    fallback = draw(st.sampled_from(names))
    specs = [RouteSpec(name=n, description="", provider="anthropic", model=f"m-{n}", model_version=f"m-{n}-1",
                       max_output_tokens=100, cheap_tier=(n != fallback and draw(st.booleans())))
             for n in names]
    specs.append(RouteSpec(name=GUARDRAIL, description="", provider="guardrail", model="guardrail",
                           model_version="guardrail-v1", max_output_tokens=100, cheap_tier=True))
    order = draw(st.permutations(specs))
    threshold = draw(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
    policy = PolicySettings(version_id=1, number=1, confidence_threshold=threshold, fallback_route=fallback)
    return Catalog(routes={s.name: s for s in order}, prices={}, baseline_model="m"), policy


def decisions(catalog: Catalog, *, confidence=None):
    return st.builds(
        RouteDecision,
        route=st.one_of(st.sampled_from(sorted(catalog.routes)), route_names),  # sometimes unknown
        confidence=confidence if confidence is not None else st.floats(min_value=0.0, max_value=1.0),
        reasoning_depth_needed=st.sampled_from(["none", "shallow", "deep"]),
        route_override_attempted=st.booleans(),
    )


# ---- policy -------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_route_returned_always_exists_in_the_catalog(data):
    catalog, policy = data.draw(catalogs())
    decision = data.draw(st.none() | decisions(catalog))
    outcome = apply_policy(decision, policy=policy, catalog=catalog, failure="timeout")
    assert outcome.route in catalog.routes
    if outcome.escalated:
        assert outcome.route == policy.fallback_route
    else:
        assert decision is not None and outcome.route == decision.route
    assert outcome.reason


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_confidence_below_the_threshold_never_selects_a_cheap_route(data):
    catalog, policy = data.draw(catalogs())
    assume(policy.confidence_threshold > 0)
    low = st.floats(min_value=0.0, max_value=policy.confidence_threshold, exclude_max=True)
    decision = data.draw(decisions(catalog, confidence=low))
    outcome = apply_policy(decision, policy=policy, catalog=catalog)
    if outcome.route == GUARDRAIL:
        # The one exception is safer, not cheaper: a refusal wrapped in an override attempt stays a refusal.
        assert decision.route == GUARDRAIL and decision.route_override_attempted
    else:
        assert outcome.route == policy.fallback_route and outcome.escalated
        assert not catalog.routes[outcome.route].cheap_tier


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_escalation_is_monotonic_in_confidence(data):
    catalog, policy = data.draw(catalogs())
    decision = data.draw(decisions(catalog))
    lower = data.draw(st.floats(min_value=0.0, max_value=decision.confidence))
    at = apply_policy(decision, policy=policy, catalog=catalog)
    below = apply_policy(RouteDecision(decision.route, lower, decision.reasoning_depth_needed,
                                       route_override_attempted=decision.route_override_attempted),
                         policy=policy, catalog=catalog)
    if at.escalated:
        assert below.escalated and below.route == at.route == policy.fallback_route
    if not below.escalated:
        assert not at.escalated and at.route == below.route


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_an_override_attempt_never_buys_a_cheaper_route(data):
    catalog, policy = data.draw(catalogs())
    decision = data.draw(decisions(catalog))
    decision = RouteDecision(decision.route, decision.confidence, decision.reasoning_depth_needed,
                             route_override_attempted=True)
    outcome = apply_policy(decision, policy=policy, catalog=catalog)
    assert outcome.route in (policy.fallback_route, GUARDRAIL)
    assert outcome.route != GUARDRAIL or decision.route == GUARDRAIL


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_the_policy_is_deterministic_and_ignores_registry_order(data):
    catalog, policy = data.draw(catalogs())
    decision = data.draw(st.none() | decisions(catalog))
    shuffled = Catalog(routes=dict(reversed(list(catalog.routes.items()))), prices={}, baseline_model="m")
    outcomes = {apply_policy(decision, policy=policy, catalog=c, failure="x") for c in (catalog, catalog, shuffled)}
    assert len(outcomes) == 1


@settings(max_examples=200, deadline=None)
@given(decision=decisions(DEFAULT), threshold=st.sampled_from([0.5, 0.75, 0.9]))
def test_on_the_default_catalog_a_low_confidence_request_never_lands_on_a_cheap_tier_model(decision, threshold):
    policy = PolicySettings(version_id=1, number=1, confidence_threshold=threshold)
    outcome = apply_policy(decision, policy=policy, catalog=DEFAULT)
    assert outcome.route in DEFAULT.routes
    if decision.confidence < threshold and outcome.route != GUARDRAIL:
        assert not DEFAULT.routes[outcome.route].cheap_tier


# ---- cost maths ---------------------------------------------------------------------------------

def money(max_value: str = "100") -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=0, max_value=Decimal(max_value), places=4, allow_nan=False, allow_infinity=False)


@st.composite
def prices(draw) -> Price:
    """A price with cached reads at most the input price (as every provider bills them)."""
    if draw(st.booleans()):
        return draw(st.sampled_from(DEFAULT_PRICES))
    input_price = draw(money())
    cached = draw(st.decimals(min_value=0, max_value=input_price, places=4))
    return Price("m", input_price, draw(money()), cached, draw(money()))


tokens = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def usages(draw) -> Usage:
    uncached, cached, written = draw(tokens), draw(tokens), draw(tokens)
    return Usage(input_tokens=uncached + cached + written, output_tokens=draw(tokens), cached_tokens=cached,
                 cache_write_tokens=written)


def is_money(value: Decimal) -> bool:
    return isinstance(value, Decimal) and value >= 0 and value.as_tuple().exponent == MONEY_PLACES.as_tuple().exponent


@settings(max_examples=300, deadline=None)
@given(uncached=tokens, cached=tokens, output=tokens, reasoning=tokens, price=prices())
def test_the_same_billing_normalises_to_the_same_usage_and_cost_for_every_provider(uncached, cached, output,
                                                                                     reasoning, price):
    """One request: `uncached` fresh prompt tokens, `cached` read from the cache, `output` visible and
    `reasoning` hidden output tokens, reported in each provider's own convention."""
    openai = usage_from_openai(SimpleNamespace(
        prompt_tokens=uncached + cached, completion_tokens=output + reasoning,
        prompt_tokens_details=SimpleNamespace(cached_tokens=cached)))
    gemini = usage_from_gemini(SimpleNamespace(
        prompt_token_count=uncached + cached, cached_content_token_count=cached,
        candidates_token_count=output, thoughts_token_count=reasoning))
    anthropic = usage_from_anthropic(SimpleNamespace(
        input_tokens=uncached, cache_read_input_tokens=cached, cache_creation_input_tokens=0,
        output_tokens=output + reasoning))
    expected = Usage(input_tokens=uncached + cached, output_tokens=output + reasoning, cached_tokens=cached)
    assert openai == gemini == anthropic == expected
    assert cost_of(openai, price) == cost_of(gemini, price) == cost_of(anthropic, price)


@settings(max_examples=200, deadline=None)
@given(uncached=tokens, read=tokens, written=tokens, output=tokens)
def test_anthropic_cache_writes_are_inside_the_normalised_prompt_and_priced_as_writes(uncached, read, written,
                                                                                       output):
    usage = usage_from_anthropic(SimpleNamespace(input_tokens=uncached, cache_read_input_tokens=read,
                                                 cache_creation_input_tokens=written, output_tokens=output))
    assert usage.input_tokens == uncached + read + written
    assert usage.uncached_input_tokens == uncached
    haiku = DEFAULT.prices["claude-haiku-4-5"]
    expected = (uncached * haiku.input_per_mtok + read * haiku.cached_input_per_mtok
                + written * haiku.cache_write_per_mtok + output * haiku.output_per_mtok) / Decimal(1_000_000)
    assert cost_of(usage, haiku) == expected.quantize(MONEY_PLACES)


@settings(max_examples=200, deadline=None)
@given(prompt=tokens, cached=tokens, output=tokens)
def test_a_provider_reporting_more_cached_than_prompt_tokens_is_clamped_not_crashed(prompt, cached, output):
    openai = usage_from_openai(SimpleNamespace(prompt_tokens=prompt, completion_tokens=output,
                                               prompt_tokens_details=SimpleNamespace(cached_tokens=cached)))
    gemini = usage_from_gemini(SimpleNamespace(prompt_token_count=prompt, cached_content_token_count=cached,
                                               candidates_token_count=output, thoughts_token_count=None))
    for usage in (openai, gemini):
        assert usage.input_tokens == prompt and usage.cached_tokens == min(prompt, cached)
        assert usage.uncached_input_tokens >= 0


@settings(max_examples=300, deadline=None)
@given(usage=usages(), price=st.none() | prices())
def test_costs_are_non_negative_decimals_quantised_to_exactly_ten_places(usage, price):
    cost = cost_of(usage, price)
    assert is_money(cost), cost
    if price is None:
        assert cost == 0


@settings(max_examples=300, deadline=None)
@given(a=usages(), b=usages(), price=prices())
def test_cost_is_additive_in_tokens(a, b, price):
    # Prices have at most 4 decimal places, so per-token costs need at most 10: no rounding at all.
    assert cost_of(a + b, price) == cost_of(a, price) + cost_of(b, price)


@settings(max_examples=300, deadline=None)
@given(usage=usages(), price=prices(), more=st.integers(min_value=1, max_value=1_000_000),
       kind=st.sampled_from(["uncached", "cached", "write", "output"]))
def test_cost_is_monotonic_in_every_kind_of_token(usage, price, more, kind):
    extra = {"uncached": Usage(more, 0, 0, 0), "cached": Usage(more, 0, more, 0),
             "write": Usage(more, 0, 0, more), "output": Usage(0, more, 0, 0)}[kind]
    assert cost_of(usage + extra, price) >= cost_of(usage, price)


@settings(max_examples=300, deadline=None)
@given(prompt=tokens, output=tokens, share=st.floats(min_value=0, max_value=1), price=prices())
def test_a_cached_read_never_costs_more_than_the_same_token_uncached(prompt, output, share, price):
    cached = int(prompt * share)
    with_cache = cost_of(Usage(input_tokens=prompt, output_tokens=output, cached_tokens=cached), price)
    without = cost_of(Usage(input_tokens=prompt, output_tokens=output), price)
    assert with_cache <= without


def test_every_catalog_price_reads_cached_tokens_at_most_at_the_input_price():
    for price in DEFAULT_PRICES:
        assert 0 <= price.cached_input_per_mtok <= price.input_per_mtok, price.model
        assert price.output_per_mtok >= 0 and price.cache_write_per_mtok >= 0
