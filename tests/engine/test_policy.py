from decimal import Decimal

from routing.engine.catalog import Catalog, PolicySettings, RouteSpec
from routing.engine.decision import RouteDecision
from routing.engine.policy import apply_policy


def _catalog() -> Catalog:
    def spec(name, provider="anthropic"):
        return RouteSpec(name=name, description="", provider=provider, model="m", model_version="m",
                         max_output_tokens=100)

    routes = {n: spec(n) for n in ("simple_qa", "complex_reasoning", "code_generation", "fallback")}
    routes["refusal_required"] = spec("refusal_required", "guardrail")
    return Catalog(routes=routes, prices={}, baseline_model="m")


POLICY = PolicySettings(version_id=1, number=1, confidence_threshold=0.75, fallback_route="complex_reasoning")


def decision(route="simple_qa", confidence=0.9, override=False):
    return RouteDecision(route=route, confidence=confidence, reasoning_depth_needed="none",
                         route_override_attempted=override)


def test_a_confident_decision_is_accepted():
    outcome = apply_policy(decision(), policy=POLICY, catalog=_catalog())
    assert (outcome.route, outcome.escalated) == ("simple_qa", False)


def test_it_escalates_low_confidence_to_the_fallback_route():
    outcome = apply_policy(decision(confidence=0.74), policy=POLICY, catalog=_catalog())
    assert outcome.route == "complex_reasoning" and outcome.escalated
    assert "below threshold" in outcome.reason


def test_confidence_exactly_at_the_threshold_is_accepted():
    assert apply_policy(decision(confidence=0.75), policy=POLICY, catalog=_catalog()).route == "simple_qa"


def test_it_escalates_a_route_override_attempt_even_when_confident():
    outcome = apply_policy(decision(confidence=0.99, override=True), policy=POLICY, catalog=_catalog())
    assert outcome.route == "complex_reasoning" and "override" in outcome.reason


def test_it_escalates_when_there_is_no_valid_decision_and_records_why():
    outcome = apply_policy(None, policy=POLICY, catalog=_catalog(), failure="sentinel timeout after 5.0s")
    assert outcome.route == "complex_reasoning" and outcome.escalated
    assert "sentinel timeout" in outcome.reason


def test_refusal_required_goes_to_the_guardrail_chain():
    outcome = apply_policy(decision("refusal_required", 0.95), policy=POLICY, catalog=_catalog())
    assert outcome.route == "refusal_required" and not outcome.escalated


def test_a_route_missing_from_the_registry_escalates():
    catalog = _catalog()
    del catalog.routes["code_generation"]
    outcome = apply_policy(decision("code_generation"), policy=POLICY, catalog=catalog)
    assert outcome.route == "complex_reasoning" and "not in registry" in outcome.reason


def test_the_threshold_and_fallback_come_from_the_policy():
    policy = PolicySettings(version_id=2, number=2, confidence_threshold=float(Decimal("0.6")),
                            fallback_route="fallback")
    assert apply_policy(decision(confidence=0.65), policy=policy, catalog=_catalog()).route == "simple_qa"
    assert apply_policy(decision(confidence=0.55), policy=policy, catalog=_catalog()).route == "fallback"
