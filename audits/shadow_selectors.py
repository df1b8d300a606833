"""Reads for shadow experiments: the list, and the report (agreement, confusion, cost, quality, spend).

The maths are pure functions over `ShadowPair`s and per-route averages, tested on hand-computed
cases; `experiment_report` gathers their inputs in a fixed number of queries.

- Agreement: the share of sampled requests where the candidate picked production's route.
- Confusion matrix: production route (rows) x candidate route (columns), counts.
- Projected cost delta: for each route, the *observed* average executor cost of production's
  decision rows in the window (a route production never used in the window is priced with
  `prices_in_effect` at the window's mean executor tokens, and listed as estimated). The delta is
  sum over the candidate's route counts of the averages minus the same over production's; divided
  by the sample size it is per request, and x the window's routed requests it projects the window.
- Projected quality delta: over disagreeing requests whose production answer has a judge score,
  the mean of (the candidate route's mean judge score - that request's score); "unknown" when no
  disagreeing request is judged, or the candidate's routes have no judged traffic.
- Spend share: the experiment's own sentinel spend / (production spend in the window + it);
  the design goal is under 2 %.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Avg, Count, OuterRef, Subquery, Sum
from django.db.models.query import QuerySet
from django.utils import timezone

from routing.engine.pricing import MONEY_PLACES, Usage, cost_of, quantize
from routing.models import Decision, Route
from routing.selectors import prices_in_effect

from .models import ShadowDecision, ShadowExperiment

SPEND_SHARE_GOAL = Decimal("0.02")
JUDGE_LOOKBACK = timedelta(days=30)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ShadowPair:
    production_route: str
    candidate_route: str
    production_score: int | None = None


def agreement_rate(pairs: Sequence[ShadowPair]) -> float | None:
    if not pairs:
        return None
    return sum(p.production_route == p.candidate_route for p in pairs) / len(pairs)


@dataclass(frozen=True)
class Confusion:
    labels: list[str]
    counts: dict[str, dict[str, int]]  # production -> candidate -> count

    def rows(self) -> list[tuple[str, list[int]]]:
        return [(p, [self.counts.get(p, {}).get(c, 0) for c in self.labels]) for p in self.labels]


def confusion_matrix(pairs: Iterable[ShadowPair]) -> Confusion:
    counts: dict[str, dict[str, int]] = {}
    labels: set[str] = set()
    for p in pairs:
        labels.update((p.production_route, p.candidate_route))
        row = counts.setdefault(p.production_route, {})
        row[p.candidate_route] = row.get(p.candidate_route, 0) + 1
    return Confusion(sorted(labels), counts)


@dataclass(frozen=True)
class CostDelta:
    production: Decimal  # sum of route averages over production's routes
    candidate: Decimal
    delta: Decimal  # candidate - production, over the sample
    per_request: Decimal | None
    unpriced_routes: list[str] = field(default_factory=list)  # no average at all: counted as zero


def cost_delta(pairs: Sequence[ShadowPair], averages: Mapping[str, Decimal]) -> CostDelta:
    production = Counter(p.production_route for p in pairs)
    candidate = Counter(p.candidate_route for p in pairs)
    unpriced = sorted((set(production) | set(candidate)) - set(averages))

    def total(counts: Counter[str]) -> Decimal:
        return quantize(sum((averages.get(r, Decimal(0)) * n for r, n in counts.items()), Decimal(0)))

    prod, cand = total(production), total(candidate)
    per_request = quantize((cand - prod) / len(pairs)) if pairs else None
    return CostDelta(prod, cand, cand - prod, per_request, unpriced)


@dataclass(frozen=True)
class QualityDelta:
    disagreeing: int
    covered: int  # disagreeing requests with a judge score and a candidate-route mean
    delta_disagreeing: float | None  # mean judge-score change on a covered disagreeing request
    delta_per_request: float | None  # x the disagreement rate: the change on the average request

    @property
    def known(self) -> bool:
        return self.delta_disagreeing is not None


def quality_delta(pairs: Sequence[ShadowPair], route_scores: Mapping[str, float]) -> QualityDelta:
    disagreeing = [p for p in pairs if p.production_route != p.candidate_route]
    covered = [p for p in disagreeing if p.production_score is not None and p.candidate_route in route_scores]
    if not covered:
        return QualityDelta(len(disagreeing), 0, None, None)
    delta = sum(route_scores[p.candidate_route] - p.production_score for p in covered) / len(covered)
    return QualityDelta(len(disagreeing), len(covered), delta, delta * len(disagreeing) / len(pairs))


def spend_share(experiment_spend: Decimal, production_spend: Decimal) -> Decimal | None:
    total = experiment_spend + production_spend
    if total <= 0:
        return None
    return (experiment_spend / total).quantize(Decimal("0.000001"))


# ---- reads -----------------------------------------------------------------------------------


def experiment_list() -> QuerySet[ShadowExperiment]:
    return ShadowExperiment.objects.select_related("candidate", "created_by", "proposal").annotate(
        sampled=Count("decisions"))


def experiment_get(*, experiment_id: int) -> ShadowExperiment | None:
    return experiment_list().filter(pk=experiment_id).first()


@dataclass(frozen=True)
class ExperimentReport:
    sampled: int
    agreement: float | None
    confusion: Confusion
    route_averages: dict[str, Decimal]
    estimated_routes: list[str]
    cost: CostDelta
    window_requests: int
    projected_window_delta: Decimal | None
    quality: QualityDelta
    sentinel_calls: int
    experiment_spend: Decimal
    production_spend: Decimal
    spend_share: Decimal | None
    window_start: datetime
    window_end: datetime

    @property
    def spend_within_goal(self) -> bool | None:
        return None if self.spend_share is None else self.spend_share < SPEND_SHARE_GOAL

    def as_dict(self) -> dict[str, Any]:
        money = str
        return {
            "sampled": self.sampled,
            "agreement_rate": self.agreement,
            "confusion_matrix": {"labels": self.confusion.labels, "counts": self.confusion.counts},
            "cost_delta": {
                "method": "observed per-route average executor cost in the window; routes without traffic "
                          "priced with prices_in_effect at the window's mean executor tokens",
                "route_averages": {r: money(v) for r, v in self.route_averages.items()},
                "estimated_routes": self.estimated_routes,
                "production_sample_cost": money(self.cost.production),
                "candidate_sample_cost": money(self.cost.candidate),
                "sample_delta": money(self.cost.delta),
                "per_request_delta": None if self.cost.per_request is None else money(self.cost.per_request),
                "window_requests": self.window_requests,
                "projected_window_delta": (None if self.projected_window_delta is None
                                           else money(self.projected_window_delta)),
                "unpriced_routes": self.cost.unpriced_routes,
            },
            "quality_delta": {
                "disagreeing": self.quality.disagreeing,
                "covered_by_judge": self.quality.covered,
                "delta_on_disagreeing": self.quality.delta_disagreeing if self.quality.known else UNKNOWN,
                "delta_per_request": self.quality.delta_per_request if self.quality.known else UNKNOWN,
            },
            "spend": {
                "candidate_sentinel_calls": self.sentinel_calls,
                "experiment_spend": money(self.experiment_spend),
                "production_spend": money(self.production_spend),
                "share": None if self.spend_share is None else money(self.spend_share),
                "goal": money(SPEND_SHARE_GOAL),
                "within_goal": self.spend_within_goal,
            },
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
        }


def _route_averages(window: QuerySet[Decision], routes: set[str]) -> tuple[dict[str, Decimal], list[str]]:
    """Observed mean executor cost per route; routes with no traffic priced from the catalog."""
    averages = {
        r["route"]: quantize(r["avg"] or Decimal(0))
        for r in window.values("route").annotate(avg=Avg("executor_cost"))
    }
    missing = sorted(routes - set(averages))
    estimated: list[str] = []
    if missing:
        tokens = window.aggregate(i=Avg("executor_input_tokens"), o=Avg("executor_output_tokens"))
        usage = Usage(input_tokens=round(tokens["i"] or 0), output_tokens=round(tokens["o"] or 0))
        prices = prices_in_effect()
        for route in Route.objects.filter(name__in=missing):
            price = prices.get(route.model) if route.provider != "guardrail" else None
            averages[route.name] = cost_of(usage, price)
            estimated.append(route.name)
    return averages, estimated


def experiment_report(experiment: ShadowExperiment, *, now: datetime | None = None) -> ExperimentReport:
    now = now or timezone.now()
    start, end = experiment.window_start, min(experiment.window_end, now)
    production_score = Decision.objects.filter(request_id=OuterRef("request_id")).values("judge_score")[:1]
    rows = list(ShadowDecision.objects.filter(experiment=experiment).annotate(
        production_score=Subquery(production_score)).values(
        "production_route", "candidate_route", "production_score", "candidate_sentinel_called",
        "candidate_sentinel_cost"))
    pairs = [ShadowPair(r["production_route"], r["candidate_route"], r["production_score"]) for r in rows]

    window = Decision.objects.filter(created_at__gte=start, created_at__lt=end).exclude(sentinel_kind="bypass")
    routes = {p.production_route for p in pairs} | {p.candidate_route for p in pairs}
    averages, estimated = _route_averages(window, routes)
    cost = cost_delta(pairs, averages)
    window_requests = window.count()
    projected = (quantize(cost.per_request * window_requests) if cost.per_request is not None else None)

    scores = {
        r["route"]: float(r["avg"])
        for r in Decision.objects.filter(created_at__gte=start - JUDGE_LOOKBACK, created_at__lt=end,
                                         judge_score__isnull=False).values("route").annotate(avg=Avg("judge_score"))
    }
    spend = sum((r["candidate_sentinel_cost"] for r in rows), Decimal(0)).quantize(MONEY_PLACES)
    everything = Decimal(Decision.objects.filter(created_at__gte=start, created_at__lt=end).aggregate(
        s=Sum("cost"))["s"] or 0)
    production_spend = everything.quantize(MONEY_PLACES)
    return ExperimentReport(
        sampled=len(pairs), agreement=agreement_rate(pairs), confusion=confusion_matrix(pairs),
        route_averages=averages, estimated_routes=estimated, cost=cost, window_requests=window_requests,
        projected_window_delta=projected, quality=quality_delta(pairs, scores),
        sentinel_calls=sum(1 for r in rows if r["candidate_sentinel_called"]), experiment_spend=spend,
        production_spend=production_spend, spend_share=spend_share(spend, production_spend),
        window_start=start, window_end=end,
    )
