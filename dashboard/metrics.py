"""Metric formulas and bucketing, in plain Python (no Django): one definition each, unit-tested.

Rollups and pages share these, so that a bucket boundary or a ratio means the same
thing on ingest, in the scheduled rebuild and on every chart.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

# Latency histogram: upper bounds in milliseconds; bucket i holds bounds[i-1] <= ms < bounds[i],
# the last bucket everything from the last bound up. Fixed, so percentiles come from rollups.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 30000, 60000,
)
LATENCY_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
LATENCY_STAGES = ("sentinel", "executor", "overhead")

# Confidence buckets: 0.0–0.5, 0.5–0.6, 0.6–0.7, 0.7–0.8, 0.8–0.9, 0.9–1.0; no confidence (cache, bypass) is -1.
CONFIDENCE_EDGES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
NO_CONFIDENCE = -1
CONFIDENCE_LABELS = {-1: "none", 0: "0.0–0.5", 1: "0.5–0.6", 2: "0.6–0.7", 3: "0.7–0.8", 4: "0.8–0.9", 5: "0.9–1.0"}

POSITIVE_SCORE = 4  # a feedback or judge score at or above this is an acceptable answer
CENT = Decimal("0.01")
RATIO_PLACES = Decimal("0.000001")
MILLION = Decimal(1_000_000)


def latency_bucket(ms: float) -> int:
    return bisect_right(LATENCY_BOUNDS_MS, ms)


def confidence_bucket(confidence: float | None) -> int:
    if confidence is None:
        return NO_CONFIDENCE
    return bisect_right(CONFIDENCE_EDGES, confidence)


def is_positive(score: int | None) -> bool:
    return score is not None and score >= POSITIVE_SCORE


def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """numerator ÷ denominator to six places (half up); None when the denominator is zero."""
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATIO_PLACES, rounding=ROUND_HALF_UP)


def percent(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) * 100 / Decimal(denominator)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def savings(baseline: Decimal, spend: Decimal) -> Decimal:
    return baseline - spend


def savings_percent(baseline: Decimal, spend: Decimal) -> Decimal | None:
    return percent(baseline - spend, baseline)


def efficiency_ratio(spend: Decimal, baseline: Decimal) -> Decimal | None:
    """Routed cost ÷ baseline cost: 1.0 means no savings, 0.25 means a quarter of the baseline."""
    return ratio(spend, baseline)


def cost_per_success(spend: Decimal, successes: int) -> Decimal | None:
    """Spend ÷ requests with a positive quality signal (feedback ≥ 4 or judge ≥ 4), to the 1/10,000 cent."""
    if not successes:
        return None
    return (spend / successes).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def cost_per_million_requests(cost: Decimal, requests: int) -> Decimal | None:
    if not requests:
        return None
    return (cost * MILLION / requests).quantize(CENT, rounding=ROUND_HALF_UP)


def percentile_from_histogram(counts: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BOUNDS_MS) -> float | None:
    """The q-th percentile (0 < q ≤ 100) of a fixed-bucket histogram, interpolated inside its bucket.

    1. rank = q/100 × total; walk the buckets until the cumulative count reaches the rank.
    2. Inside that bucket [lo, hi), interpolate linearly by the rank's position among its counts.
    3. The open last bucket has no upper bound: report its lower bound (a floor, said so on the page).
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q / 100 * total
    cumulative = 0
    for index, count in enumerate(counts):
        if count and cumulative + count >= rank:
            lo = bounds[index - 1] if index > 0 else 0.0
            if index >= len(bounds):
                return float(lo)
            hi = bounds[index]
            return float(lo + (hi - lo) * (rank - cumulative) / count)
        cumulative += count
    return float(bounds[-1])


def calibration_error(buckets: Sequence[tuple[int, float, float]]) -> float | None:
    """Expected calibration error: Σ n_b/N × |accuracy_b − mean confidence_b| over (n, mean confidence, accuracy)."""
    total = sum(n for n, _, _ in buckets)
    if not total:
        return None
    return sum(n / total * abs(accuracy - confidence) for n, confidence, accuracy in buckets)


def largest_remainder(values: Sequence[int], total: Decimal, places: Decimal = CENT) -> list[Decimal]:
    """Split `total` in proportion to `values`, rounded to `places`, summing exactly to `total`."""
    weight = sum(values)
    if not weight:
        return [Decimal(0).quantize(places) for _ in values]
    unit = places
    exact = [Decimal(v) * total / weight for v in values]
    floors = [(e / unit).to_integral_value(rounding="ROUND_FLOOR") * unit for e in exact]
    left = int(((total - sum(floors)) / unit).to_integral_value())
    order = sorted(range(len(values)), key=lambda i: (exact[i] - floors[i], values[i]), reverse=True)
    for i in order[:left]:
        floors[i] += unit
    return [f.quantize(places) for f in floors]
