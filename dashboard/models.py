"""Rollup tables the dashboards read: per hour and per day × application × route × executor model ×
confidence bucket × simulated, with every sum a page needs.

Counts and token sums are integers, money is Decimal, so rollups equal sums over the raw
decision rows exactly (tests compare them). Latencies are kept as fixed histogram buckets
(`metrics.LATENCY_BOUNDS_MS`) so that p50/p95/p99 can be read from rollups. Confidence and
latency sums are floats: they feed means only.

Rows are written by `dashboard.services` only: incrementally on ingest (`rollups_apply`)
and by the scheduled exact rebuild of recent hours (`rollups_rebuild`).
"""

from __future__ import annotations

from django.db import models

from .metrics import LATENCY_BUCKETS, LATENCY_STAGES

ROLLUP_MONEY = {"max_digits": 30, "decimal_places": 10}

DIMENSIONS = ("bucket", "application_id", "route", "executor_model", "confidence_bucket", "simulated")
INT_MEASURES = (
    "requests", "errors", "successes", "cache_hits",
    "sentinel_input_tokens", "sentinel_output_tokens", "sentinel_cached_tokens",
    "executor_input_tokens", "executor_output_tokens", "executor_cached_tokens", "executor_cache_write_tokens",
    "feedback_count", "feedback_sum", "feedback_positive",
    "judge_count", "judge_sum", "judge_positive", "confidence_count",
)
MONEY_MEASURES = ("sentinel_cost", "executor_cost", "cost", "baseline_cost")
FLOAT_MEASURES = (
    "confidence_sum", "judge_confidence_sum", "feedback_confidence_sum",
    "sentinel_ms_sum", "executor_ms_sum", "overhead_ms_sum",
)
HISTOGRAM_FIELDS = {stage: tuple(f"{stage}_h{i:02d}" for i in range(LATENCY_BUCKETS)) for stage in LATENCY_STAGES}
HISTOGRAM_MEASURES = tuple(name for stage in LATENCY_STAGES for name in HISTOGRAM_FIELDS[stage])
MEASURES = INT_MEASURES + MONEY_MEASURES + FLOAT_MEASURES + HISTOGRAM_MEASURES


class Rollup(models.Model):
    bucket = models.DateTimeField(help_text="Start of the hour or day (UTC).")
    application_id = models.IntegerField(default=0, help_text="0: no application. Not a foreign key: rollups outlive apps.")
    route = models.CharField(max_length=64)
    executor_model = models.CharField(max_length=120, blank=True)
    confidence_bucket = models.SmallIntegerField(help_text="-1 none, 0 for 0.0–0.5, 1 for 0.5–0.6 … 5 for 0.9–1.0")
    simulated = models.BooleanField(default=False)

    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    successes = models.BigIntegerField(default=0, help_text="Requests with feedback ≥ 4 or judge ≥ 4.")
    cache_hits = models.BigIntegerField(default=0)
    sentinel_input_tokens = models.BigIntegerField(default=0)
    sentinel_output_tokens = models.BigIntegerField(default=0)
    sentinel_cached_tokens = models.BigIntegerField(default=0)
    executor_input_tokens = models.BigIntegerField(default=0)
    executor_output_tokens = models.BigIntegerField(default=0)
    executor_cached_tokens = models.BigIntegerField(default=0)
    executor_cache_write_tokens = models.BigIntegerField(default=0)
    feedback_count = models.BigIntegerField(default=0)
    feedback_sum = models.BigIntegerField(default=0)
    feedback_positive = models.BigIntegerField(default=0)
    judge_count = models.BigIntegerField(default=0)
    judge_sum = models.BigIntegerField(default=0)
    judge_positive = models.BigIntegerField(default=0)
    sentinel_cost = models.DecimalField(**ROLLUP_MONEY, default=0)
    executor_cost = models.DecimalField(**ROLLUP_MONEY, default=0)
    cost = models.DecimalField(**ROLLUP_MONEY, default=0)
    baseline_cost = models.DecimalField(**ROLLUP_MONEY, default=0)
    confidence_count = models.BigIntegerField(default=0)
    confidence_sum = models.FloatField(default=0)
    judge_confidence_sum = models.FloatField(default=0)
    feedback_confidence_sum = models.FloatField(default=0)
    sentinel_ms_sum = models.FloatField(default=0)
    executor_ms_sum = models.FloatField(default=0)
    overhead_ms_sum = models.FloatField(default=0)
    for _name in HISTOGRAM_MEASURES:
        locals()[_name] = models.BigIntegerField(default=0)
    del _name

    class Meta:
        abstract = True


class RollupHour(Rollup):
    class Meta:
        constraints = [models.UniqueConstraint(fields=list(DIMENSIONS), name="rollup_hour_cell")]


class RollupDay(Rollup):
    class Meta:
        constraints = [models.UniqueConstraint(fields=list(DIMENSIONS), name="rollup_day_cell")]
