"""Reads for the dashboards: rollup tables only (never raw decision rows), dataclasses out.

Every page is a few aggregate queries over `RollupDay` (totals, whole UTC days) or
`RollupHour` (time series of short ranges). Each dataclass also gives the exact numbers
behind each chart as a `Table`, which the CSV download serialises.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum

from routing.models import Application, Route

from . import metrics
from .filters import Filters
from .models import HISTOGRAM_FIELDS, RollupDay, RollupHour
from .services import has_cache_hit_field


@dataclass(frozen=True)
class Table:
    """The numbers behind one chart, as they are downloaded."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _dec(value: Any) -> Decimal:
    return Decimal(value) if value is not None else Decimal(0)


def _int(value: Any) -> int:
    return int(value or 0)


def _series_model(filters: Filters) -> type[RollupDay | RollupHour]:
    return RollupHour if filters.hourly else RollupDay


def _cells(filters: Filters, *, series: bool = False):
    model = _series_model(filters) if series else RollupDay
    return model.objects.filter(filters.cells()).order_by()


# ---- shared: filter options and the simulated marker ---------------------------------------

@dataclass(frozen=True)
class FilterOptions:
    applications: list[tuple[int, str]]
    routes: list[str]
    models: list[str]


def filter_options() -> FilterOptions:
    return FilterOptions(
        applications=list(Application.objects.order_by("name").values_list("id", "name")),
        routes=list(Route.objects.order_by("position", "name").values_list("name", flat=True)),
        models=sorted(m for m in RollupDay.objects.order_by().values_list("executor_model", flat=True).distinct() if m),
    )


def simulated_data_present() -> bool:
    """True while any rolled-up decision was answered by the provider emulator."""
    return RollupDay.objects.filter(simulated=True).exists()


# ---- overview ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Totals:
    requests: int = 0
    cost: Decimal = Decimal(0)
    baseline_cost: Decimal = Decimal(0)
    sentinel_cost: Decimal = Decimal(0)
    successes: int = 0
    cheap_requests: int = 0
    cache_hits: int = 0
    simulated_requests: int = 0
    cache_hit_known: bool = False

    @property
    def savings(self) -> Decimal:
        return metrics.savings(self.baseline_cost, self.cost)

    @property
    def savings_percent(self) -> Decimal | None:
        return metrics.savings_percent(self.baseline_cost, self.cost)

    @property
    def efficiency_ratio(self) -> Decimal | None:
        return metrics.efficiency_ratio(self.cost, self.baseline_cost)

    @property
    def cost_per_success(self) -> Decimal | None:
        return metrics.cost_per_success(self.cost, self.successes)

    @property
    def cheap_tier_percent(self) -> Decimal | None:
        return metrics.percent(self.cheap_requests, self.requests)

    @property
    def cache_hit_percent(self) -> Decimal | None:
        return metrics.percent(self.cache_hits, self.requests) if self.cache_hit_known else None


@dataclass(frozen=True)
class SpendPoint:
    bucket: datetime
    requests: int
    cost: Decimal
    baseline_cost: Decimal


@dataclass(frozen=True)
class Overview:
    filters: Filters
    totals: Totals
    series: list[SpendPoint]

    def tables(self) -> dict[str, Table]:
        t = self.totals
        summary = [
            ("requests", t.requests), ("spend_usd", t.cost), ("baseline_spend_usd", t.baseline_cost),
            ("savings_usd", t.savings), ("savings_percent", t.savings_percent),
            ("routing_efficiency_ratio", t.efficiency_ratio), ("successful_interactions", t.successes),
            ("cost_per_successful_interaction_usd", t.cost_per_success),
            ("cheap_tier_requests", t.cheap_requests), ("cheap_tier_percent", t.cheap_tier_percent),
            ("sentinel_spend_usd", t.sentinel_cost),
            ("cache_hit_percent", t.cache_hit_percent if t.cache_hit_known else "n/a"),
        ]
        return {
            "summary": Table(("metric", "value"), summary),
            "spend": Table(("period_start_utc", "requests", "spend_usd", "baseline_spend_usd", "savings_usd"),
                           [(p.bucket.isoformat(), p.requests, p.cost, p.baseline_cost, p.baseline_cost - p.cost)
                            for p in self.series]),
        }


def overview(filters: Filters) -> Overview:
    cheap = Q(route__in=Route.objects.filter(cheap_tier=True).values("name"))
    sums = _cells(filters).aggregate(
        t_requests=Sum("requests"), t_cost=Sum("cost"), baseline=Sum("baseline_cost"), sentinel=Sum("sentinel_cost"),
        t_successes=Sum("successes"), cheap=Sum("requests", filter=cheap), t_cache_hits=Sum("cache_hits"),
        t_simulated=Sum("requests", filter=Q(simulated=True)),
    )
    totals = Totals(
        requests=_int(sums["t_requests"]), cost=_dec(sums["t_cost"]), baseline_cost=_dec(sums["baseline"]),
        sentinel_cost=_dec(sums["sentinel"]), successes=_int(sums["t_successes"]), cheap_requests=_int(sums["cheap"]),
        cache_hits=_int(sums["t_cache_hits"]), simulated_requests=_int(sums["t_simulated"]),
        cache_hit_known=has_cache_hit_field(),
    )
    series = [
        SpendPoint(r["bucket"], _int(r["n"]), _dec(r["spend"]), _dec(r["base"]))
        for r in _cells(filters, series=True).values("bucket")
        .annotate(n=Sum("requests"), spend=Sum("cost"), base=Sum("baseline_cost")).order_by("bucket")
    ]
    return Overview(filters, totals, series)


# ---- cost ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteCost:
    route: str
    requests: int
    cost: Decimal
    baseline_cost: Decimal
    sentinel_cost: Decimal
    executor_input_tokens: int
    executor_cached_tokens: int
    executor_output_tokens: int
    sentinel_input_tokens: int
    sentinel_output_tokens: int

    @property
    def uncached_input_tokens(self) -> int:
        return self.executor_input_tokens - self.executor_cached_tokens

    @property
    def cost_per_million_requests(self) -> Decimal | None:
        return metrics.cost_per_million_requests(self.cost, self.requests)


@dataclass(frozen=True)
class AppCost:
    application: str
    requests: int
    cost: Decimal
    baseline_cost: Decimal


@dataclass(frozen=True)
class CostPage:
    filters: Filters
    by_period: list[tuple[datetime, str, Decimal]]
    routes: list[RouteCost]
    applications: list[AppCost]

    def tables(self) -> dict[str, Table]:
        return {
            "spend_by_route": Table(("period_start_utc", "route", "spend_usd"),
                                    [(b.isoformat(), r, c) for b, r, c in self.by_period]),
            "cost_per_million": Table(("route", "requests", "spend_usd", "cost_per_1m_requests_usd"),
                                      [(r.route, r.requests, r.cost, r.cost_per_million_requests) for r in self.routes]),
            "tokens": Table(
                ("route", "executor_uncached_input_tokens", "executor_cached_input_tokens", "executor_output_tokens",
                 "sentinel_input_tokens", "sentinel_output_tokens"),
                [(r.route, r.uncached_input_tokens, r.executor_cached_tokens, r.executor_output_tokens,
                  r.sentinel_input_tokens, r.sentinel_output_tokens) for r in self.routes]),
            "top_applications": Table(("application", "requests", "spend_usd", "baseline_spend_usd", "savings_usd"),
                                      [(a.application, a.requests, a.cost, a.baseline_cost, a.baseline_cost - a.cost)
                                       for a in self.applications]),
        }


TOP_APPLICATIONS = 10


def cost(filters: Filters) -> CostPage:
    by_period = [
        (r["bucket"], r["route"], _dec(r["spend"]))
        for r in _cells(filters, series=True).values("bucket", "route").annotate(spend=Sum("cost"))
        .order_by("bucket", "route")
    ]
    token_fields = ("executor_input_tokens", "executor_cached_tokens", "executor_output_tokens",
                    "sentinel_input_tokens", "sentinel_output_tokens")
    routes = [
        RouteCost(r["route"], _int(r["n"]), _dec(r["spend"]), _dec(r["base"]), _dec(r["sentinel"]),
                  *(_int(r[f"t_{f}"]) for f in token_fields))
        for r in _cells(filters).values("route")
        .annotate(n=Sum("requests"), spend=Sum("cost"), base=Sum("baseline_cost"), sentinel=Sum("sentinel_cost"),
                  **{f"t_{f}": Sum(f) for f in token_fields})
        .order_by("-spend", "route")
    ]
    apps = list(
        _cells(filters).values("application_id")
        .annotate(n=Sum("requests"), spend=Sum("cost"), base=Sum("baseline_cost"))
        .order_by("-spend", "application_id")[:TOP_APPLICATIONS]
    )
    names = dict(Application.objects.filter(id__in=[a["application_id"] for a in apps]).values_list("id", "name"))
    applications = [
        AppCost(names.get(a["application_id"], "(none)" if not a["application_id"] else f"#{a['application_id']}"),
                _int(a["n"]), _dec(a["spend"]), _dec(a["base"]))
        for a in apps
    ]
    return CostPage(filters, by_period, routes, applications)


# ---- quality -------------------------------------------------------------------------------

@dataclass
class QualityRow:
    key: str
    requests: int = 0
    judge_count: int = 0
    judge_sum: int = 0
    judge_positive: int = 0
    feedback_count: int = 0
    feedback_sum: int = 0
    feedback_positive: int = 0
    judge_confidence_sum: float = 0.0
    feedback_confidence_sum: float = 0.0

    def add(self, r: dict[str, Any]) -> None:
        for name in ("requests", "judge_count", "judge_sum", "judge_positive",
                     "feedback_count", "feedback_sum", "feedback_positive"):
            setattr(self, name, getattr(self, name) + _int(r[f"t_{name}"]))
        self.judge_confidence_sum += float(r["t_judge_confidence_sum"] or 0)
        self.feedback_confidence_sum += float(r["t_feedback_confidence_sum"] or 0)

    @property
    def judge_mean(self) -> Decimal | None:
        return metrics.ratio(self.judge_sum, self.judge_count)

    @property
    def judge_acceptable_percent(self) -> Decimal | None:
        return metrics.percent(self.judge_positive, self.judge_count)

    @property
    def feedback_mean(self) -> Decimal | None:
        return metrics.ratio(self.feedback_sum, self.feedback_count)

    @property
    def feedback_acceptable_percent(self) -> Decimal | None:
        return metrics.percent(self.feedback_positive, self.feedback_count)

    @property
    def judged_confidence_mean(self) -> float | None:
        return self.judge_confidence_sum / self.judge_count if self.judge_count else None

    @property
    def feedback_confidence_mean(self) -> float | None:
        return self.feedback_confidence_sum / self.feedback_count if self.feedback_count else None


def _quality_table(rows: list[QualityRow], key: str) -> Table:
    return Table(
        (key, "requests", "judged", "judge_mean", "judge_acceptable_percent",
         "feedback_count", "feedback_mean", "feedback_acceptable_percent"),
        [(r.key, r.requests, r.judge_count, r.judge_mean, r.judge_acceptable_percent,
          r.feedback_count, r.feedback_mean, r.feedback_acceptable_percent) for r in rows],
    )


@dataclass(frozen=True)
class QualityPage:
    filters: Filters
    by_route: list[QualityRow]
    by_model: list[QualityRow]
    by_confidence: list[QualityRow]  # key: bucket label, in bucket order, "none" excluded

    @property
    def judged(self) -> int:
        return sum(r.judge_count for r in self.by_route)

    @property
    def feedback(self) -> int:
        return sum(r.feedback_count for r in self.by_route)

    @property
    def calibration_error(self) -> float | None:
        """ECE of the sentinel's confidence against the judge's acceptable-answer rate."""
        return metrics.calibration_error([
            (r.judge_count, r.judged_confidence_mean, r.judge_positive / r.judge_count)
            for r in self.by_confidence if r.judge_count
        ])

    @property
    def feedback_calibration_error(self) -> float | None:
        return metrics.calibration_error([
            (r.feedback_count, r.feedback_confidence_mean, r.feedback_positive / r.feedback_count)
            for r in self.by_confidence if r.feedback_count
        ])

    def tables(self) -> dict[str, Table]:
        confidence = Table(
            ("confidence_bucket", "requests", "judged", "judged_mean_confidence", "judge_acceptable_rate",
             "feedback_count", "feedback_mean_confidence", "feedback_acceptable_rate"),
            [(r.key, r.requests, r.judge_count, r.judged_confidence_mean,
              metrics.ratio(r.judge_positive, r.judge_count), r.feedback_count, r.feedback_confidence_mean,
              metrics.ratio(r.feedback_positive, r.feedback_count)) for r in self.by_confidence],
        )
        return {
            "by_route": _quality_table(self.by_route, "route"),
            "by_model": _quality_table(self.by_model, "executor_model"),
            "reliability": confidence,
        }


def quality(filters: Filters) -> QualityPage:
    """One grouped query; the three breakdowns are summed from it in Python (≤ routes × models × 7 rows)."""
    fields = ("requests", "judge_count", "judge_sum", "judge_positive", "feedback_count", "feedback_sum",
              "feedback_positive", "judge_confidence_sum", "feedback_confidence_sum")
    rows = _cells(filters).values("route", "executor_model", "confidence_bucket").annotate(
        **{f"t_{f}": Sum(f) for f in fields}).order_by("route", "executor_model", "confidence_bucket")
    by_route: dict[str, QualityRow] = {}
    by_model: dict[str, QualityRow] = {}
    by_conf = {b: QualityRow(metrics.CONFIDENCE_LABELS[b]) for b in range(len(metrics.CONFIDENCE_EDGES) + 1)}
    for r in rows:
        by_route.setdefault(r["route"], QualityRow(r["route"])).add(r)
        model = r["executor_model"] or "(no executor)"
        by_model.setdefault(model, QualityRow(model)).add(r)
        if r["confidence_bucket"] in by_conf:
            by_conf[r["confidence_bucket"]].add(r)
    return QualityPage(filters, list(by_route.values()), sorted(by_model.values(), key=lambda q: q.key),
                       list(by_conf.values()))


# ---- latency -------------------------------------------------------------------------------

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class LatencyPoint:
    bucket: datetime | None  # None: the whole range
    route: str
    requests: int
    percentiles: dict[str, dict[int, float | None]]  # stage → q → ms


@dataclass(frozen=True)
class LatencyPage:
    filters: Filters
    series: list[LatencyPoint]
    overall: list[LatencyPoint]

    def tables(self) -> dict[str, Table]:
        tables = {}
        for stage in metrics.LATENCY_STAGES:
            tables[stage] = Table(
                ("period_start_utc", "route", "requests", "p50_ms", "p95_ms", "p99_ms"),
                [(p.bucket.isoformat() if p.bucket else "all", p.route, p.requests,
                  *(p.percentiles[stage][q] for q in PERCENTILES)) for p in self.overall + self.series],
            )
        return tables


def _latency_point(bucket: datetime | None, route: str, hist: dict[str, list[int]], requests: int) -> LatencyPoint:
    return LatencyPoint(bucket, route, requests, {
        stage: {q: metrics.percentile_from_histogram(hist[stage], q) for q in PERCENTILES}
        for stage in metrics.LATENCY_STAGES
    })


def latency(filters: Filters) -> LatencyPage:
    names = [n for stage in metrics.LATENCY_STAGES for n in HISTOGRAM_FIELDS[stage]]
    rows = _cells(filters, series=True).values("bucket", "route").annotate(
        n=Sum("requests"), **{f"t_{n}": Sum(n) for n in names}).order_by("bucket", "route")
    series = []
    totals: dict[str, dict[str, list[int]]] = {}
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        hist = {stage: [_int(r[f"t_{n}"]) for n in HISTOGRAM_FIELDS[stage]] for stage in metrics.LATENCY_STAGES}
        series.append(_latency_point(r["bucket"], r["route"], hist, _int(r["n"])))
        total = totals.setdefault(r["route"], {s: [0] * metrics.LATENCY_BUCKETS for s in metrics.LATENCY_STAGES})
        for stage in metrics.LATENCY_STAGES:
            total[stage] = [a + b for a, b in zip(total[stage], hist[stage], strict=True)]
        counts[r["route"]] += _int(r["n"])
    overall = [_latency_point(None, route, hist, counts[route]) for route, hist in sorted(totals.items())]
    return LatencyPage(filters, series, overall)


# ---- routing mix ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MixPage:
    filters: Filters
    series: list[tuple[datetime, str, int]]
    period_totals: dict[datetime, int] = field(default_factory=dict)

    def share(self, bucket: datetime, requests: int) -> Decimal | None:
        return metrics.percent(requests, self.period_totals.get(bucket, 0))

    def tables(self) -> dict[str, Table]:
        return {"route_share": Table(("period_start_utc", "route", "requests", "share_percent"),
                                     [(b.isoformat(), r, n, self.share(b, n)) for b, r, n in self.series])}


def mix(filters: Filters) -> MixPage:
    series = [
        (r["bucket"], r["route"], _int(r["n"]))
        for r in _cells(filters, series=True).values("bucket", "route").annotate(n=Sum("requests"))
        .order_by("bucket", "route")
    ]
    totals: dict[datetime, int] = defaultdict(int)
    for bucket, _, n in series:
        totals[bucket] += n
    return MixPage(filters, series, dict(totals))


# ---- calculator defaults -------------------------------------------------------------------

@dataclass(frozen=True)
class TrafficProfile:
    """The last 30 days of real traffic, as calculator defaults."""

    days: int
    requests: int
    executor_input_tokens: int
    executor_cached_tokens: int
    executor_output_tokens: int
    sentinel_input_tokens: int
    sentinel_output_tokens: int
    route_requests: dict[str, int]


def traffic_profile(filters: Filters) -> TrafficProfile:
    fields = ("executor_input_tokens", "executor_cached_tokens", "executor_output_tokens",
              "sentinel_input_tokens", "sentinel_output_tokens")
    rows = list(_cells(filters).values("route").annotate(n=Sum("requests"), **{f"t_{f}": Sum(f) for f in fields})
                .order_by("route"))
    sums = {f: sum(_int(r[f"t_{f}"]) for r in rows) for f in fields}
    return TrafficProfile(
        days=filters.days, requests=sum(_int(r["n"]) for r in rows),
        route_requests={r["route"]: _int(r["n"]) for r in rows}, **sums,
    )
