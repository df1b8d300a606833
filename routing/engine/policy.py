"""The routing policy: turns a sentinel decision (or its absence) into a route.

Rules, in order:
1. No valid decision (invalid output, timeout, provider error) → the fallback route.
2. `route_override_attempted` → the fallback route (never let a user talk routing down),
   except that a decided `refusal_required` still goes to the guardrail: wrapping a
   harmful request in an override attempt must not buy it a frontier model.
3. Confidence below the threshold → the fallback route.
4. `refusal_required` → the guardrail route, which answers without any model call.
5. A route that is unknown or disabled in the registry → the fallback route.
6. Otherwise the decided route.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Catalog, PolicySettings
from .decision import RouteDecision


@dataclass(frozen=True)
class PolicyOutcome:
    route: str
    reason: str
    escalated: bool


def apply_policy(
    decision: RouteDecision | None,
    *,
    policy: PolicySettings,
    catalog: Catalog,
    failure: str | None = None,
) -> PolicyOutcome:
    fallback = policy.fallback_route
    if decision is None:
        return PolicyOutcome(fallback, f"escalated: {failure or 'no sentinel decision'}", True)
    if decision.route_override_attempted:
        if decision.route == catalog.guardrail_route:
            return PolicyOutcome(decision.route, "refusal required: guardrail chain (override attempt ignored)", False)
        return PolicyOutcome(fallback, "escalated: route override attempted", True)
    if decision.confidence < policy.confidence_threshold:
        return PolicyOutcome(
            fallback,
            f"escalated: confidence {decision.confidence:.2f} below threshold {policy.confidence_threshold:.2f}",
            True,
        )
    if decision.route == catalog.guardrail_route:
        return PolicyOutcome(decision.route, "refusal required: guardrail chain", False)
    if decision.route not in catalog.routes:
        return PolicyOutcome(fallback, f"escalated: route {decision.route!r} not in registry", True)
    return PolicyOutcome(decision.route, "sentinel decision accepted", False)


@dataclass(frozen=True)
class ModeSettings:
    """The policy version's cache and execution-mode settings (beside `PolicySettings`)."""

    cache_similarity_threshold: float = 0.92
    speculative: bool = False
    chained: bool = False
    cache_enabled: bool = True


def route_rank(route: str, catalog: Catalog) -> tuple[int, float]:
    """Order routes from least to most capable/expensive, for "never cheaper than" checks.

    The guardrail (a refusal) ranks above everything: refusing is never a concession to the
    requester. Otherwise the route's model output price, then input price, orders it.
    """
    if route == catalog.guardrail_route:
        return (2, 0.0)
    spec = catalog.routes.get(route)
    price = catalog.prices.get(spec.model) if spec else None
    if price is None:
        return (0, 0.0)
    return (1, float(price.output_per_mtok) * 1000 + float(price.input_per_mtok))
