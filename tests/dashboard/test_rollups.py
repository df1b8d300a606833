"""Rollups equal sums over the raw decision rows: on ingest, under replays, after late scores, after a rebuild."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone as dj_tz

from dashboard.metrics import LATENCY_STAGES, confidence_bucket, latency_bucket
from dashboard.models import (
    FLOAT_MEASURES,
    HISTOGRAM_FIELDS,
    MEASURES,
    RollupDay,
    RollupHour,
)
from dashboard.services import (
    has_cache_hit_field,
    rollups_rebuild,
    rollups_rebuild_all,
    rollups_scores_apply,
)
from routing.models import Application, Decision, Feedback
from routing.services import decisions_insert, feedback_record

from .conftest import decision_row, random_rows


def expected(grain: str) -> dict[tuple, dict[str, object]]:
    """Sums over raw rows, computed the slow obvious way (tests may scan raw rows; pages may not)."""
    cells: dict[tuple, dict[str, object]] = defaultdict(lambda: defaultdict(int))
    for d in Decision.objects.all():
        at = d.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if grain == "day":
            at = at.replace(hour=0)
        c = cells[(at, d.application_id or 0, d.route, d.executor_model, confidence_bucket(d.confidence), d.simulated)]
        c["requests"] += 1
        c["cache_hits"] += bool(getattr(d, "cache_hit", False))
        c["errors"] += d.status != "ok"
        fb, judge = d.feedback_score, d.judge_score
        c["successes"] += (fb is not None and fb >= 4) or (judge is not None and judge >= 4)
        c["feedback_count"] += fb is not None
        c["feedback_sum"] += fb or 0
        c["feedback_positive"] += fb is not None and fb >= 4
        c["judge_count"] += judge is not None
        c["judge_sum"] += judge or 0
        c["judge_positive"] += judge is not None and judge >= 4
        c["confidence_count"] += d.confidence is not None
        for f in ("sentinel_input_tokens", "sentinel_output_tokens", "sentinel_cached_tokens", "executor_input_tokens",
                  "executor_output_tokens", "executor_cached_tokens", "executor_cache_write_tokens"):
            c[f] += getattr(d, f)
        for f in ("sentinel_cost", "executor_cost", "cost", "baseline_cost"):
            c[f] = c.get(f, Decimal(0)) + getattr(d, f)
        for stage in LATENCY_STAGES:
            c[HISTOGRAM_FIELDS[stage][latency_bucket(getattr(d, f"{stage}_ms"))]] += 1
            c[f"{stage}_ms_sum"] += getattr(d, f"{stage}_ms")
        c["confidence_sum"] += d.confidence or 0
        c["judge_confidence_sum"] += (d.confidence or 0) if judge is not None else 0
        c["feedback_confidence_sum"] += (d.confidence or 0) if fb is not None else 0
    return cells


def stored(model) -> dict[tuple, dict[str, object]]:
    return {
        (r.bucket, r.application_id, r.route, r.executor_model, r.confidence_bucket, r.simulated):
        {m: getattr(r, m) for m in MEASURES}
        for r in model.objects.all()
    }


def assert_exact(model, grain: str) -> None:
    want, got = expected(grain), stored(model)
    assert set(got) == set(want), (set(got) - set(want), set(want) - set(got))
    for key, values in want.items():
        for measure in MEASURES:
            if measure in FLOAT_MEASURES:
                assert got[key][measure] == pytest.approx(values.get(measure, 0), abs=1e-6), (key, measure)
            else:
                assert got[key][measure] == values.get(measure, 0), (key, measure)


@pytest.fixture
def apps(db):
    return [Application.objects.create(name=f"app-{i}").pk for i in range(3)]


def test_ingest_keeps_hour_and_day_rollups_equal_to_raw_sums(apps):
    rows = random_rows(400, apps=(None, *apps))
    for start in range(0, len(rows), 97):
        decisions_insert(records=rows[start:start + 97])
    assert Decision.objects.count() == 400
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")


def test_replayed_and_repeated_rows_are_counted_once(apps):
    rows = random_rows(120, apps=(None, *apps))
    decisions_insert(records=rows[:80])
    # a spool replay that overlaps what is stored, with a repeat inside the batch
    decisions_insert(records=rows[40:] + rows[100:110])
    decisions_insert(records=rows)
    assert Decision.objects.count() == 120
    assert RollupDay.objects.aggregate(n=Sum("requests"))["n"] == 120
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")


@pytest.mark.django_db(transaction=True)
def test_rows_whose_application_vanished_are_still_counted(apps):
    rows = random_rows(10, apps=(apps[0],))
    rows[3]["application_id"] = 999_999  # deleted application: the insert retries without the link
    decisions_insert(records=rows)
    assert Decision.objects.count() == 10
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")


def test_feedback_that_arrived_before_its_row_is_counted(apps):
    row = decision_row(application_id=apps[0], feedback_score=None, judge_score=None)
    Feedback.objects.create(request_id=row["request_id"], application_id=apps[0], score=5)
    decisions_insert(records=[row])
    assert Decision.objects.get().feedback_score == 5
    cell = RollupDay.objects.get()
    assert (cell.feedback_count, cell.feedback_sum, cell.feedback_positive, cell.successes) == (1, 5, 1, 1)
    assert_exact(RollupDay, "day")


def test_the_score_hook_moves_rollups_with_late_feedback_and_judge_scores(apps):
    rows = random_rows(30, apps=(apps[0],))
    for r in rows:
        r["feedback_score"] = None
    decisions_insert(records=rows)
    target = rows[5]
    for score in (5, 2, 4):  # record, then replace twice: feedback_record moves the rollups itself
        feedback_record(request_id=target["request_id"], application_id=apps[0], score=score, thumbs="", comment="")
    rollups_scores_apply(request_id=rows[6]["request_id"], judge_score=1)
    Decision.objects.filter(request_id=rows[6]["request_id"]).update(judge_score=1)
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")


def test_the_rebuild_repairs_recent_hours_exactly(apps):
    rows = random_rows(200, apps=(None, *apps))
    decisions_insert(records=rows)
    if has_cache_hit_field():
        Decision.objects.filter(request_id__in=[r["request_id"] for r in rows[10:20]]).update(cache_hit=True)
    # changes that bypass the hooks: late feedback written directly, a row deleted
    Decision.objects.filter(request_id=rows[0]["request_id"]).update(feedback_score=5, judge_score=1)
    Decision.objects.filter(request_id=rows[1]["request_id"]).delete()
    first = min(r["created_at"] for r in rows)
    last = max(r["created_at"] for r in rows)
    rollups_rebuild(start=first, end=last + timedelta(hours=1))
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")


def test_a_full_rebuild_matches_incremental_rollups(apps):
    decisions_insert(records=random_rows(150, apps=(None, *apps), seed=11))
    before = (stored(RollupHour), stored(RollupDay))
    RollupHour.objects.all().delete()
    RollupDay.objects.all().delete()
    rollups_rebuild_all()
    after = (stored(RollupHour), stored(RollupDay))
    for b, a in zip(before, after, strict=True):
        assert set(b) == set(a)
        for key in b:
            for m in MEASURES:
                if m in FLOAT_MEASURES:
                    assert a[key][m] == pytest.approx(b[key][m], abs=1e-6)
                else:
                    assert a[key][m] == b[key][m]


def test_bucket_edges_put_each_row_in_the_right_cell(db):
    at = datetime(2026, 5, 4, 23, 59, 59, 999999, tzinfo=UTC)
    decisions_insert(records=[
        decision_row(created_at=at, confidence=0.5, sentinel_ms=5.0),
        decision_row(created_at=at + timedelta(microseconds=1), confidence=0.4999, sentinel_ms=4.999),
    ])
    hours = {(r.bucket, r.confidence_bucket): r for r in RollupHour.objects.all()}
    late = hours[(datetime(2026, 5, 4, 23, tzinfo=UTC), 1)]
    early = hours[(datetime(2026, 5, 5, 0, tzinfo=UTC), 0)]
    assert late.sentinel_h03 == 1 and early.sentinel_h02 == 1  # [5, 10) and [2, 5)
    assert set(RollupDay.objects.values_list("bucket", flat=True)) == {
        datetime(2026, 5, 4, tzinfo=UTC), datetime(2026, 5, 5, tzinfo=UTC)}
    assert dj_tz.is_aware(late.bucket)


def test_the_scheduled_task_rebuilds_the_recent_window(db):
    from dashboard.tasks import rebuild_recent_rollups

    now = dj_tz.now()
    decisions_insert(records=[decision_row(created_at=now - timedelta(hours=2), request_id=uuid.uuid4())])
    Decision.objects.update(judge_score=5)
    rebuild_recent_rollups.apply(kwargs={"hours": 3}).get()  # runs here whatever the broker
    assert RollupDay.objects.get().judge_positive == 1
    assert rebuild_recent_rollups.name == "dashboard.rebuild_recent_rollups"
