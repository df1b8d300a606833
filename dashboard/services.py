"""Writes to the rollup tables: incremental on ingest, exact rebuild of recent hours, score changes.

Exactness under replays: `routing.services.decisions_insert` calls `rollups_apply(rows)` inside
its transaction, *before* its `bulk_create(ignore_conflicts=True)`:

1. take the rollup lock (a transaction-scoped PostgreSQL advisory lock; SQLite already runs
   one writer at a time), so no other insert can store one of these request ids meanwhile;
2. drop rows whose request id is already stored, and repeats inside the batch (the first
   wins, as in the insert);
3. the rest are exactly the rows the insert will store: add their sums to the hour and day
   cells with one `INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x` per table.

If the insert fails, the transaction rolls the rollup increments back with it.

Anything that changes a stored row later (feedback, judge scores) goes through
`rollups_scores_apply`, or is caught by `rollups_rebuild`, which recomputes whole hours
from the raw rows (and days from their hours) and is scheduled over the recent past.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Count, IntegerField, Q, Sum, Value, When
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from routing.models import Decision, Feedback

from .metrics import (
    CONFIDENCE_EDGES,
    LATENCY_BOUNDS_MS,
    LATENCY_STAGES,
    POSITIVE_SCORE,
    confidence_bucket,
    is_positive,
    latency_bucket,
)
from .models import (
    DIMENSIONS,
    FLOAT_MEASURES,
    HISTOGRAM_FIELDS,
    INT_MEASURES,
    MEASURES,
    MONEY_MEASURES,
    Rollup,
    RollupDay,
    RollupHour,
)

ROLLUP_LOCK_KEY = 0x726F6C6C7570  # "rollup": serialises decision inserts, rebuilds and score changes
UPSERT_CHUNK = 200

Cell = tuple[datetime, int, str, str, int, bool]


def has_cache_hit_field() -> bool:
    """`Decision.cache_hit` is being added separately; until it exists the pages say n/a."""
    return any(f.name == "cache_hit" for f in Decision._meta.get_fields())


def _lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_KEY])


def hour_of(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC) if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return hour_of(moment).replace(hour=0)


def _measures(row: Any, *, feedback_score: int | None = None) -> dict[str, Any]:
    """The rollup sums one decision row contributes (feedback_score overrides a missing one)."""
    fb = row.feedback_score if row.feedback_score is not None else feedback_score
    judge = row.judge_score
    conf = row.confidence
    values: dict[str, Any] = {
        "requests": 1,
        "errors": 0 if row.status == "ok" else 1,
        "successes": 1 if is_positive(fb) or is_positive(judge) else 0,
        "cache_hits": 1 if getattr(row, "cache_hit", False) else 0,
        "feedback_count": 0 if fb is None else 1,
        "feedback_sum": fb or 0,
        "feedback_positive": 1 if is_positive(fb) else 0,
        "judge_count": 0 if judge is None else 1,
        "judge_sum": judge or 0,
        "judge_positive": 1 if is_positive(judge) else 0,
        "confidence_count": 0 if conf is None else 1,
        "confidence_sum": conf or 0.0,
        "judge_confidence_sum": conf if conf is not None and judge is not None else 0.0,
        "feedback_confidence_sum": conf if conf is not None and fb is not None else 0.0,
    }
    for name in ("sentinel_input_tokens", "sentinel_output_tokens", "sentinel_cached_tokens",
                 "executor_input_tokens", "executor_output_tokens", "executor_cached_tokens",
                 "executor_cache_write_tokens"):
        values[name] = getattr(row, name) or 0
    for name in MONEY_MEASURES:
        values[name] = Decimal(getattr(row, name) or 0)
    for stage in LATENCY_STAGES:
        ms = getattr(row, f"{stage}_ms") or 0.0
        values[f"{stage}_ms_sum"] = ms
        values[HISTOGRAM_FIELDS[stage][latency_bucket(ms)]] = 1
    return values


def _cell(row: Any, bucket: datetime) -> Cell:
    return (bucket, row.application_id or 0, row.route, row.executor_model or "",
            confidence_bucket(row.confidence), bool(row.simulated))


def _add(into: dict[str, Any], values: dict[str, Any], sign: int = 1) -> None:
    for name, value in values.items():
        into[name] = into.get(name, 0) + sign * value


def _upsert(model: type[Rollup], cells: dict[Cell, dict[str, Any]]) -> None:
    """Add each cell's sums to its rollup row, creating it when missing (one statement per chunk)."""
    if not cells:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    q = connection.ops.quote_name
    columns = list(DIMENSIONS) + list(MEASURES)
    zero = {**{m: 0 for m in INT_MEASURES + tuple(n for s in HISTOGRAM_FIELDS.values() for n in s)},
            **{m: Decimal(0) for m in MONEY_MEASURES}, **{m: 0.0 for m in FLOAT_MEASURES}}
    updates = ", ".join(f"{q(m)} = {table}.{q(m)} + excluded.{q(m)}" for m in MEASURES)
    bucket_field = model._meta.get_field("bucket")
    money_field = model._meta.get_field("cost")
    items = sorted(cells.items())  # a fixed order: concurrent writers never deadlock on cells
    for start in range(0, len(items), UPSERT_CHUNK):
        chunk = items[start:start + UPSERT_CHUNK]
        placeholders = ", ".join("(" + ", ".join(["%s"] * len(columns)) + ")" for _ in chunk)
        params: list[Any] = []
        for key, values in chunk:
            params.append(bucket_field.get_db_prep_value(key[0], connection))  # as the ORM stores it
            params.extend(key[1:])
            params.extend(money_field.get_db_prep_value(values.get(m, zero[m]), connection)
                          if m in MONEY_MEASURES else values.get(m, zero[m]) for m in MEASURES)
        sql = (
            f"INSERT INTO {table} ({', '.join(q(c) for c in columns)}) VALUES {placeholders} "
            f"ON CONFLICT ({', '.join(q(d) for d in DIMENSIONS)}) DO UPDATE SET {updates}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def _apply_deltas(deltas: Iterable[tuple[Any, dict[str, Any]]]) -> None:
    hours: dict[Cell, dict[str, Any]] = defaultdict(dict)
    days: dict[Cell, dict[str, Any]] = defaultdict(dict)
    for row, values in deltas:
        _add(hours[_cell(row, hour_of(row.created_at))], values)
        _add(days[_cell(row, day_of(row.created_at))], values)
    _upsert(RollupHour, hours)
    _upsert(RollupDay, days)


def rollups_apply(rows: Sequence[Decision]) -> int:
    """Add to the rollups the decision rows an insert in this transaction is about to store.

    Call inside the inserting transaction, before `bulk_create(..., ignore_conflicts=True)`;
    see the module docstring for why this keeps rollups exact under replays. Returns the
    number of rows counted.
    """
    if not rows:
        return 0
    _lock()
    ids = [row.request_id for row in rows]
    stored = set(Decision.objects.filter(request_id__in=ids).values_list("request_id", flat=True))
    fresh = []
    for row in rows:
        if row.request_id in stored:
            continue
        stored.add(row.request_id)
        fresh.append(row)
    if not fresh:
        return 0
    # Feedback that arrived before its row is copied onto the row right after the insert: count it now.
    early = {
        (fb_request, app): score
        for fb_request, app, score in Feedback.objects.filter(request_id__in=[r.request_id for r in fresh])
        .values_list("request_id", "application_id", "score")
    }
    _apply_deltas(
        (row, _measures(row, feedback_score=early.get((row.request_id, row.application_id))))
        for row in fresh
    )
    return len(fresh)


_KEEP = object()


def rollups_scores_apply(
    *, request_id: uuid.UUID, application_id: int | None = None, feedback_score: Any = _KEEP, judge_score: Any = _KEEP
) -> int:
    """Move the rollups from a decision's current quality scores to new ones, before they are written.

    Call inside the transaction that updates `Decision.feedback_score` / `judge_score`, before
    the update (e.g. from `routing.services.feedback_record`). Rows are locked so that a
    concurrent change cannot be counted twice.
    """
    _lock()
    rows = Decision.objects.select_for_update().filter(request_id=request_id)
    if application_id is not None:
        rows = rows.filter(application_id=application_id)
    changed = []
    for row in rows:
        before = _measures(row)
        if feedback_score is not _KEEP:
            row.feedback_score = feedback_score
        if judge_score is not _KEEP:
            row.judge_score = judge_score
        after = _measures(row)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
        changed.append((row, {k: v for k, v in delta.items() if v}))
    _apply_deltas(changed)
    return len(changed)


# ---- exact rebuild -----------------------------------------------------------------------------

def _raw_aggregates() -> dict[str, Any]:
    """ORM aggregates over raw decision rows that mirror `_measures` exactly."""
    fb_pos = Q(feedback_score__gte=POSITIVE_SCORE)
    judge_pos = Q(judge_score__gte=POSITIVE_SCORE)
    one = Count("id")
    aggregates: dict[str, Any] = {
        "requests": one,
        "errors": Count("id", filter=~Q(status="ok")),
        "successes": Count("id", filter=fb_pos | judge_pos),
        "cache_hits": Count("id", filter=Q(cache_hit=True)) if has_cache_hit_field() else Value(0),
        "feedback_count": Count("feedback_score"),
        "feedback_sum": Sum("feedback_score"),
        "feedback_positive": Count("id", filter=fb_pos),
        "judge_count": Count("judge_score"),
        "judge_sum": Sum("judge_score"),
        "judge_positive": Count("id", filter=judge_pos),
        "confidence_count": Count("confidence"),
        "confidence_sum": Sum("confidence"),
        "judge_confidence_sum": Sum("confidence", filter=Q(judge_score__isnull=False)),
        "feedback_confidence_sum": Sum("confidence", filter=Q(feedback_score__isnull=False)),
    }
    for name in ("sentinel_input_tokens", "sentinel_output_tokens", "sentinel_cached_tokens",
                 "executor_input_tokens", "executor_output_tokens", "executor_cached_tokens",
                 "executor_cache_write_tokens", *MONEY_MEASURES):
        aggregates[name] = Sum(name)
    bounds = LATENCY_BOUNDS_MS
    for stage in LATENCY_STAGES:
        field = f"{stage}_ms"
        aggregates[f"{field}_sum"] = Sum(field)
        for i, name in enumerate(HISTOGRAM_FIELDS[stage]):
            cond = Q()
            if i > 0:
                cond &= Q(**{f"{field}__gte": bounds[i - 1]})
            if i < len(bounds):
                cond &= Q(**{f"{field}__lt": bounds[i]})
            aggregates[name] = Count("id", filter=cond)
    return aggregates


def _confidence_case() -> Case:
    whens = [When(confidence__isnull=True, then=Value(-1))]
    whens += [When(confidence__lt=edge, then=Value(i)) for i, edge in enumerate(CONFIDENCE_EDGES)]
    return Case(*whens, default=Value(len(CONFIDENCE_EDGES)), output_field=IntegerField())


def _db_datetime(model: type[Rollup], value: datetime) -> Any:
    return model._meta.get_field("bucket").get_db_prep_value(value, connection)


def _rebuild_hours(first: datetime, stop: datetime) -> int:
    """Replace the hour cells in [first, stop) (whole hours) with aggregates of the raw rows.

    One `INSERT … SELECT` whose SELECT is the ORM's grouped aggregate: no row goes through
    Python (creating rollup objects in Python costs ~1 ms a cell).
    """
    grouped = (
        Decision.objects.filter(created_at__gte=first, created_at__lt=stop)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC), app=Coalesce("application_id", Value(0)),
                  cb=_confidence_case())
        .values("hour", "app", "route", "executor_model", "cb", "simulated")
        .order_by()
        .annotate(**{f"t_{m}": agg for m, agg in _raw_aggregates().items()})
    )
    select_sql, params = grouped.query.sql_with_params()
    q = connection.ops.quote_name
    table = q(RollupHour._meta.db_table)
    columns = ", ".join(q(c) for c in (*DIMENSIONS, *MEASURES))
    values = ", ".join(["g.hour", "g.app", "g.route", "g.executor_model", "g.cb", "g.simulated",
                        *(f"COALESCE(g.t_{m}, 0)" for m in MEASURES)])
    with transaction.atomic():
        # Lock first: every insert that counted rows has committed them, none can start meanwhile.
        _lock()
        RollupHour.objects.filter(bucket__gte=first, bucket__lt=stop).delete()
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {values} FROM ({select_sql}) g", params)
            return cursor.rowcount


def _rebuild_day(day: datetime) -> int:
    q = connection.ops.quote_name
    dims = [q(d) for d in DIMENSIONS if d != "bucket"]
    sums = [f"SUM({q(m)})" for m in MEASURES]
    sql = (
        f"INSERT INTO {q(RollupDay._meta.db_table)} ({q('bucket')}, {', '.join(dims)}, "
        f"{', '.join(q(m) for m in MEASURES)}) "
        f"SELECT %s, {', '.join(dims)}, {', '.join(sums)} FROM {q(RollupHour._meta.db_table)} "
        f"WHERE {q('bucket')} >= %s AND {q('bucket')} < %s GROUP BY {', '.join(dims)}"
    )
    with transaction.atomic():
        _lock()
        RollupDay.objects.filter(bucket=day).delete()
        with connection.cursor() as cursor:
            cursor.execute(sql, [_db_datetime(RollupDay, day), _db_datetime(RollupHour, day),
                                 _db_datetime(RollupHour, day + timedelta(days=1))])
            return cursor.rowcount


REBUILD_STEP = timedelta(hours=6)


def rollups_rebuild(*, start: datetime, end: datetime) -> int:
    """Recompute every hour touching [start, end) from raw rows, then the days those hours are in.

    1. Hours are rebuilt in steps of six: under the rollup lock, one grouped query over the raw
       rows, then the step's hour cells are replaced, in one transaction. Ingest waits for at
       most one step; holding the lock while aggregating is what keeps the result exact
       (no insert can count a row that the aggregate then also counts, or misses).
    2. Each touched day is then replaced by the sum of its hour cells, under the same lock.
    Returns the number of hour cells written.
    """
    hour = hour_of(start)
    written = 0
    days: list[datetime] = []
    while hour < end:
        stop = min(hour + REBUILD_STEP, hour_of(end - timedelta(microseconds=1)) + timedelta(hours=1))
        written += _rebuild_hours(hour, stop)
        while hour < stop:
            if not days or days[-1] != day_of(hour):
                days.append(day_of(hour))
            hour += timedelta(hours=1)
    for day in days:
        _rebuild_day(day)
    return written


def rollups_rebuild_recent(*, hours: int) -> int:
    now = timezone.now()
    return rollups_rebuild(start=now - timedelta(hours=hours), end=now)


def rollups_rebuild_all() -> int:
    """Rebuild from the first to the last decision (first setup, benchmarks)."""
    first = Decision.objects.order_by("created_at").values_list("created_at", flat=True).first()
    last = Decision.objects.order_by("-created_at").values_list("created_at", flat=True).first()
    if first is None or last is None:
        RollupHour.objects.all().delete()
        RollupDay.objects.all().delete()
        return 0
    RollupHour.objects.filter(bucket__lt=hour_of(first)).delete()
    RollupDay.objects.filter(bucket__lt=day_of(first)).delete()
    return rollups_rebuild(start=first, end=last + timedelta(microseconds=1))
