"""Reads for the landing page (the charts of the dashboard issue read rollups instead)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Sum

from routing.models import Decision


@dataclass(frozen=True)
class RouteSummary:
    route: str
    requests: int
    cost: Decimal
    baseline_cost: Decimal


@dataclass(frozen=True)
class Summary:
    requests: int
    cost: Decimal
    baseline_cost: Decimal
    simulated: bool
    routes: list[RouteSummary]

    @property
    def savings(self) -> Decimal:
        return self.baseline_cost - self.cost


def summary() -> Summary:
    rows = list(
        Decision.objects.values("route").annotate(n=Count("id"), cost=Sum("cost"), base=Sum("baseline_cost"))
        .order_by("-n")
    )
    routes = [RouteSummary(r["route"], r["n"], r["cost"] or Decimal(0), r["base"] or Decimal(0)) for r in rows]
    return Summary(
        requests=sum(r.requests for r in routes),
        cost=sum((r.cost for r in routes), Decimal(0)),
        baseline_cost=sum((r.baseline_cost for r in routes), Decimal(0)),
        simulated=Decision.objects.filter(simulated=True).exists(),
        routes=routes,
    )
