"""Writes to the rollup tables: incremental on ingest, exact rebuild of recent hours, score changes.

Exactness under replays. `routing.services.decisions_insert` counts exactly the rows it stores,
inside its own transaction and under the rollup lock (a transaction-scoped PostgreSQL advisory
lock; SQLite already runs one writer at a time), so that a rebuild never sees half of an insert:

- PostgreSQL: the insert returns the ids it stored (`ON CONFLICT DO NOTHING RETURNING id`), and
  `rollups_apply_stored(decision_ids=…)` adds those rows to the cells in one statement
  (`rollup_upsert_sql`, prepared once per connection): their hour cells are the rebuild's own grouped aggregate over these ids,
  their day cells the sums of those hour cells (as the rebuild makes days), each added with
  `INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x`. Insert-time and rebuilt rollups are
  the same SQL.
- Other databases (SQLite): `rollups_apply(rows)` runs *before* the ORM's
  `bulk_create(ignore_conflicts=True)`: it drops rows whose request id is already stored and
  repeats inside the batch (the first wins, as in the insert), and adds the rest, exactly the
  rows the insert will store, with one `INSERT … ON CONFLICT DO UPDATE` per table.

If the insert fails, the transaction rolls the rollup increments back with it.

Anything that changes a stored row later (feedback, judge scores) goes through
`rollups_scores_apply`, or is caught by `rollups_rebuild`, which recomputes whole hours
from the raw rows (and days from their hours) and is scheduled over the recent past.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import BooleanField, Case, Count, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.expressions import RawSQL
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


def rollups_lock() -> None:
    """Serialise with every other rollup writer until this transaction ends (PostgreSQL; SQLite
    already runs one writer at a time)."""
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


def _on_conflict_add_sql(model: type[Rollup]) -> str:
    """`ON CONFLICT` clause that adds a new cell's sums to the stored cell."""
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    updates = ", ".join(f"{q(m)} = {table}.{q(m)} + excluded.{q(m)}" for m in MEASURES)
    return f"ON CONFLICT ({', '.join(q(d) for d in DIMENSIONS)}) DO UPDATE SET {updates}"


def _upsert(model: type[Rollup], cells: dict[Cell, dict[str, Any]]) -> None:
    """Add each cell's sums to its rollup row, creating it when missing (one statement per chunk)."""
    if not cells:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    q = connection.ops.quote_name
    columns = list(DIMENSIONS) + list(MEASURES)
    zero = {**{m: 0 for m in INT_MEASURES + tuple(n for s in HISTOGRAM_FIELDS.values() for n in s)},
            **{m: Decimal(0) for m in MONEY_MEASURES}, **{m: 0.0 for m in FLOAT_MEASURES}}
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
            f"{_on_conflict_add_sql(model)}"
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
    rollups_lock()
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
    rollups_lock()
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


def _hour_cells_sql(decisions: QuerySet) -> tuple[str, list[Any]]:
    """SELECT the hour cells of `decisions`, grouped and summed by the database, as rollup columns.

    The one definition of a cell's sums over raw rows (`_raw_aggregates`, mirroring `_measures`):
    the rebuild and the PostgreSQL ingest both use it, so they cannot disagree. No row goes
    through Python (creating rollup objects in Python costs ~1 ms a cell).
    """
    grouped = (
        decisions.annotate(b=TruncHour("created_at", tzinfo=UTC), app=Coalesce("application_id", Value(0)),
                           cb=_confidence_case())
        .values("b", "app", "route", "executor_model", "cb", "simulated")
        .order_by()
        .annotate(**{f"t_{m}": agg for m, agg in _raw_aggregates().items()})
    )
    select_sql, params = grouped.query.sql_with_params()
    q = connection.ops.quote_name
    values = ", ".join([
        *(f"g.{alias} AS {q(column)}" for alias, column in zip(
            ("b", "app", "route", "executor_model", "cb", "simulated"), DIMENSIONS, strict=True)),
        *(f"COALESCE(g.t_{m}, 0) AS {q(m)}" for m in MEASURES),
    ])
    return f"SELECT {values} FROM ({select_sql}) g", list(params)


def _day_cells_sql(hour_cells: str, *, day: str, where: str = "") -> str:
    """SELECT day cells as the sums of hour cells (`hour_cells`: the hour table, or a set of its rows).

    `day`: the day's bucket, either "%s" (all these hours are in that day) or an expression of
    the hours' bucket (grouped on).
    """
    q = connection.ops.quote_name
    dims = ", ".join(q(d) for d in DIMENSIONS if d != "bucket")
    sums = ", ".join(f"SUM({q(m)})" for m in MEASURES)
    group = dims if day == "%s" else f"{day}, {dims}"
    return f"SELECT {day}, {dims}, {sums} FROM {hour_cells} {where} GROUP BY {group}"


def _columns_sql() -> str:
    return ", ".join(connection.ops.quote_name(c) for c in (*DIMENSIONS, *MEASURES))


def _rebuild_hours(first: datetime, stop: datetime) -> int:
    """Replace the hour cells in [first, stop) (whole hours) with aggregates of the raw rows."""
    select_sql, params = _hour_cells_sql(Decision.objects.filter(created_at__gte=first, created_at__lt=stop))
    table = connection.ops.quote_name(RollupHour._meta.db_table)
    with transaction.atomic():
        # Lock first: every insert that counted rows has committed them, none can start meanwhile.
        rollups_lock()
        RollupHour.objects.filter(bucket__gte=first, bucket__lt=stop).delete()
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({_columns_sql()}) {select_sql}", params)
            return cursor.rowcount


def _rebuild_day(day: datetime) -> int:
    q = connection.ops.quote_name
    hours = _day_cells_sql(q(RollupHour._meta.db_table), day="%s",
                           where=f"WHERE {q('bucket')} >= %s AND {q('bucket')} < %s")
    with transaction.atomic():
        rollups_lock()
        RollupDay.objects.filter(bucket=day).delete()
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {q(RollupDay._meta.db_table)} ({_columns_sql()}) {hours}",
                           [_db_datetime(RollupDay, day), _db_datetime(RollupHour, day),
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


# ---- ingest on PostgreSQL: the rebuild's aggregate over the rows just stored ---------------------

@functools.cache
def _stored_upsert_template() -> tuple[str, tuple[Any, ...], tuple[int, int, int]]:
    """`rollup_upsert_sql` compiled once (~50 ms of ORM expression resolution): the SQL, its
    parameters, and where the lowest id, the highest id and the id array go among them."""
    # Placeholders, found again among the compiled parameters by identity.
    low: list[int] = []
    high: list[int] = []
    ids: list[int] = []
    q = connection.ops.quote_name
    pk = f"{q(Decision._meta.db_table)}.{q('id')}"
    # The range lets the planner see how few rows these are (a primary-key range scan over the
    # rows just stored); on its own, `= ANY(array)` can get a sequential scan of the whole table.
    stored = Decision.objects.filter(RawSQL(f"{pk} BETWEEN %s AND %s AND {pk} = ANY(%s::bigint[])", (low, high, ids),
                                            output_field=BooleanField()))
    hour_cells, params = _hour_cells_sql(stored)
    day_cells = _day_cells_sql("hour_cells", day=f"DATE_TRUNC('day', {q('bucket')})")
    columns = _columns_sql()
    sql = (
        f"WITH hour_cells AS MATERIALIZED ({hour_cells}), "
        f"hours AS (INSERT INTO {q(RollupHour._meta.db_table)} ({columns}) SELECT * FROM hour_cells "
        f"{_on_conflict_add_sql(RollupHour)}) "
        f"INSERT INTO {q(RollupDay._meta.db_table)} ({columns}) {day_cells} {_on_conflict_add_sql(RollupDay)}"
    )
    low_at, high_at, ids_at = (next(i for i, p in enumerate(params) if p is marker) for marker in (low, high, ids))
    return sql, tuple(params), (low_at, high_at, ids_at)


def rollup_upsert_sql(decision_ids: Sequence[int]) -> tuple[str, list[Any]]:
    """One statement (and its parameters) that adds the stored decisions `decision_ids` to the rollups.

    Their hour cells are the rebuild's grouped aggregate (`_hour_cells_sql`) over these ids, their
    day cells the sums of those hour cells (as `_rebuild_day` sums hours); each is added with
    `INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x`. PostgreSQL only (`id = ANY(array)`).
    """
    sql, params, (low, high, ids) = _stored_upsert_template()
    bound = list(params)
    bound[low], bound[high] = min(decision_ids), max(decision_ids)
    bound[ids] = _id_array(decision_ids)
    return sql, bound


def _id_array(decision_ids: Sequence[int]) -> str:
    return "{" + ",".join(map(str, decision_ids)) + "}"  # a literal: psycopg adapts a list of 2,000 in ~1 ms


@functools.cache
def _stored_upsert_prepared() -> tuple[str, str]:
    """`PREPARE` for `rollup_upsert_sql`'s statement: its fixed parameters written in as literals
    (quoted by psycopg, as client-side binding quotes them), the ids as $1, $2 and $3.

    The statement is ~40 kB of SQL with ~150 parameters; sent with client-side binding, psycopg
    re-parsed it on every call (it caches only statements of ≤ 50 parameters), about 1 ms of the
    decision writer's time under the interpreter lock per batch, and PostgreSQL parsed and
    planned it again each time. Prepared once per connection, each batch sends three values.
    Returns the statement's name (from a hash of its text: another version of this code sharing
    the session, through a pooler, never runs a different statement under the same name) and
    the `PREPARE`.
    """
    sql, params, (low, high, ids) = _stored_upsert_template()
    pieces = sql.split("%s")
    if len(pieces) != len(params) + 1:
        raise ImproperlyConfigured("the rollup statement's placeholders do not match its parameters")
    variable = {low: "$1", high: "$2", ids: "$3"}
    out = [pieces[0].replace("%%", "%")]
    for i, (param, piece) in enumerate(zip(params, pieces[1:], strict=True)):
        out.append(variable[i] if i in variable else connection.ops.compose_sql("%s", [param]))
        out.append(piece.replace("%%", "%"))
    body = "".join(out)
    name = f"dashboard_rollups_add_stored_{hashlib.sha256(body.encode()).hexdigest()[:16]}"
    return name, f"PREPARE {name} (bigint, bigint, bigint[]) AS {body}"


# Raw connections (psycopg) on which the statement is prepared; a reconnect starts a new one.
_prepared_on: weakref.WeakSet[Any] = weakref.WeakSet()


def rollups_apply_stored(*, decision_ids: Sequence[int]) -> None:
    """Add decision rows this transaction has just stored to the hour and day rollups (PostgreSQL).

    Call inside the inserting transaction, under `rollups_lock()`, after the rows are final
    (early feedback copied on): the sums are read from the stored rows themselves. The statement
    is `rollup_upsert_sql`'s, prepared on first use on each connection.
    """
    if not decision_ids:
        return
    name, prepare = _stored_upsert_prepared()
    with connection.cursor() as cursor:
        raw = connection.connection
        if raw not in _prepared_on:
            # Asked first: the session may have it already (a pooler's, or after `rollups_forget_connection`).
            cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(prepare)  # not undone by a rollback: once it succeeds, the session has it
            _prepared_on.add(raw)
        cursor.execute(f"EXECUTE {name} (%s, %s, %s)", [min(decision_ids), max(decision_ids), _id_array(decision_ids)])


def rollups_forget_connection(raw: Any) -> None:
    """After a failed insert: ask this connection again whether it has the statement (a pooler's
    `DISCARD ALL` drops it)."""
    _prepared_on.discard(raw)
