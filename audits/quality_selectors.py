"""Quality aggregates over judge audits: pure maths first, then the one database loader.

Every audit carries weight w = 1/p (its inclusion probability), so means and shares are
weighted (Horvitz-Thompson style ratio estimates). Confidence intervals use Kish's effective
sample size n_eff = (Σw)² / Σw², which equals n when all weights are equal:
- the share acceptable (score >= 4) gets a Wilson score interval at n_eff;
- the mean score gets mean ± 1.96·sqrt(weighted variance / n_eff).
Calibration: per confidence bucket, the acceptable share (observed accuracy) against the mean
confidence; expected calibration error ECE = Σ_b (W_b / W) · |accuracy_b − confidence_b|.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .sampling import BUCKET_EDGES, confidence_bucket

Z95 = 1.959963984540054
ACCEPTABLE = 4
NO_INFORMATION = "confidence carries no information beyond the threshold"


@dataclass(frozen=True)
class Observation:
    score: int
    weight: float = 1.0
    confidence: float | None = None
    route: str = ""
    model: str = ""


@dataclass(frozen=True)
class GroupStat:
    key: str
    count: int
    weighted_mean: float
    mean_ci: tuple[float, float]
    acceptable_share: float
    share_ci: tuple[float, float]


@dataclass(frozen=True)
class BucketCalibration:
    bucket: str
    count: int
    mean_confidence: float
    accuracy: float
    accuracy_ci: tuple[float, float]


@dataclass
class Calibration:
    buckets: list[BucketCalibration]
    ece: float
    threshold: float
    verdict: str = ""


@dataclass
class QualityReport:
    audits: int
    overall: GroupStat | None
    by_route: list[GroupStat]
    by_model: list[GroupStat]
    by_bucket: list[GroupStat]
    calibration: Calibration
    feedback: list[dict[str, Any]] = field(default_factory=list)
    misroutes: dict[str, int] = field(default_factory=dict)


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (n may be an effective, non-integer size)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - margin), min(1.0, centre + margin))


def effective_n(weights: list[float]) -> float:
    total, squares = sum(weights), sum(w * w for w in weights)
    return total * total / squares if squares else 0.0


def group_stat(key: str, observations: list[Observation]) -> GroupStat:
    weights = [o.weight for o in observations]
    total = sum(weights)
    mean = sum(o.weight * o.score for o in observations) / total
    variance = sum(o.weight * (o.score - mean) ** 2 for o in observations) / total
    n_eff = effective_n(weights)
    half = Z95 * math.sqrt(variance / n_eff) if n_eff else 0.0
    share = sum(o.weight for o in observations if o.score >= ACCEPTABLE) / total
    return GroupStat(key, len(observations), mean, (mean - half, mean + half), share, wilson(share * n_eff, n_eff))


def group_by(observations: Iterable[Observation], key: Callable[[Observation], str]) -> list[GroupStat]:
    groups: dict[str, list[Observation]] = defaultdict(list)
    for o in observations:
        groups[key(o)].append(o)
    return [group_stat(k, groups[k]) for k in sorted(groups)]


def bucket_labels() -> list[str]:
    return [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(BUCKET_EDGES, BUCKET_EDGES[1:], strict=False)]


def calibration(observations: Iterable[Observation], *, threshold: float) -> Calibration:
    groups: dict[str, list[Observation]] = defaultdict(list)
    for o in observations:
        if o.confidence is not None:
            groups[confidence_bucket(o.confidence)].append(o)
    buckets = []
    grand = sum(o.weight for obs in groups.values() for o in obs)
    ece = 0.0
    for label in bucket_labels():
        obs = groups.get(label)
        if not obs:
            continue
        total = sum(o.weight for o in obs)
        conf = sum(o.weight * (o.confidence or 0.0) for o in obs) / total
        acc = sum(o.weight for o in obs if o.score >= ACCEPTABLE) / total
        n_eff = effective_n([o.weight for o in obs])
        buckets.append(BucketCalibration(label, len(obs), conf, acc, wilson(acc * n_eff, n_eff)))
        ece += total / grand * abs(acc - conf)
    result = Calibration(buckets, ece, threshold)
    result.verdict = calibration_verdict(result)
    return result


def calibration_verdict(cal: Calibration) -> str:
    """NO_INFORMATION when at least two buckets lie above the threshold and every pair of them
    overlaps in its confidence interval (their accuracies cannot be told apart)."""
    above = [b for b in cal.buckets if float(b.bucket.split("-")[0]) >= cal.threshold]
    if len(above) < 2:
        return "too few audited buckets above the threshold to judge"
    for i, a in enumerate(above):
        for b in above[i + 1:]:
            if a.accuracy_ci[1] < b.accuracy_ci[0] or b.accuracy_ci[1] < a.accuracy_ci[0]:
                return "accuracy differs between confidence buckets above the threshold"
    return NO_INFORMATION


def build_report(observations: list[Observation], *, threshold: float) -> QualityReport:
    return QualityReport(
        audits=len(observations),
        overall=group_stat("all", observations) if observations else None,
        by_route=group_by(observations, lambda o: o.route),
        by_model=group_by(observations, lambda o: o.model),
        by_bucket=group_by(observations, lambda o: confidence_bucket(o.confidence)),
        calibration=calibration(observations, threshold=threshold),
    )


# ---- the database side -------------------------------------------------------------------------


def quality_report(*, since: datetime | None = None, until: datetime | None = None) -> QualityReport:
    """The report over scored audits (two queries for audits, one for feedback)."""
    from django.db.models import Avg, Count

    from routing.models import Decision, PolicyStatus, PolicyVersion

    from .models import JudgeAudit, JudgeStatus

    audits = JudgeAudit.objects.filter(status=JudgeStatus.SCORED).select_related("sample")
    decisions = Decision.objects.filter(feedback_score__isnull=False)
    if since is not None:
        audits, decisions = audits.filter(created_at__gte=since), decisions.filter(created_at__gte=since)
    if until is not None:
        audits, decisions = audits.filter(created_at__lt=until), decisions.filter(created_at__lt=until)
    rows = list(audits)
    observations = [Observation(a.score or 0, a.sample.weight, a.sample.confidence, a.sample.route,
                                a.sample.executor_model) for a in rows]
    active = PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE).values_list(
        "confidence_threshold", flat=True).first()
    report = build_report(observations, threshold=float(active) if active is not None else 0.75)
    report.feedback = [
        {"route": r["route"], "count": r["n"], "mean_feedback": r["mean"]}
        for r in decisions.values("route").annotate(n=Count("id"), mean=Avg("feedback_score")).order_by("route")
    ]
    misroutes: dict[str, int] = defaultdict(int)
    for a in rows:
        if a.misroute:
            misroutes[a.misroute] += 1
    report.misroutes = dict(misroutes)
    return report
