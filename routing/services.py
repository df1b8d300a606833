"""Writes: API keys, feedback, the bootstrap policy, decision rows, config-version bumps."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import operator
import secrets
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Field
from django.utils import timezone

from dashboard.services import (
    rollups_apply,
    rollups_apply_stored,
    rollups_forget_connection,
    rollups_lock,
    rollups_scores_apply,
)
from routing.engine.dispatch import DecisionRecord

from .limits import MAX_BUDGET
from .models import ApiKey, Application, Decision, Feedback, PolicyStatus, PolicyVersion

KEY_PREFIX = "rgw"
CONFIG_VERSION_KEY = "routing:config_version"


def hash_api_key(raw: str) -> str:
    """SHA-256 of the key. Keys carry 256 bits of randomness, so a slow KDF adds nothing
    but latency on every request; a fast hash is the right tool here."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def bump_config_version() -> None:
    """Tell every web process (through the shared cache) to reload catalog, policy and keys."""
    try:
        cache.incr(CONFIG_VERSION_KEY)
    except ValueError:
        cache.set(CONFIG_VERSION_KEY, 1, timeout=None)


def application_get_or_create(*, name: str) -> Application:
    application, _ = Application.objects.get_or_create(name=name)
    return application


@dataclass(frozen=True)
class ApiKeyLimits:
    """A key's abuse limits (None: unlimited); see routing/limits.py."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_budget: Decimal | None = None
    monthly_budget: Decimal | None = None


def api_key_limits_validate(
    *, requests_per_minute: Any = None, tokens_per_minute: Any = None, daily_budget: Any = None,
    monthly_budget: Any = None,
) -> ApiKeyLimits:
    """Positive integers for the rates, Decimal >= 0 for the budgets (from strings, never floats).

    Raises ValidationError with a message per field.
    """
    errors: dict[str, str] = {}
    rates: dict[str, int | None] = {}
    for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
        if value is None or value == "":
            rates[name] = None
            continue
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2_147_483_647:
            errors[name] = "must be a positive integer (or empty for no limit)"
        else:
            rates[name] = value
    budgets: dict[str, Decimal | None] = {}
    for name, value in (("daily_budget", daily_budget), ("monthly_budget", monthly_budget)):
        if value is None or value == "":
            budgets[name] = None
            continue
        if isinstance(value, (float, bool)):
            errors[name] = "must be a decimal amount given as a string, not a float"
            continue
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            errors[name] = "must be a decimal amount in USD, e.g. 25.00"
            continue
        if not amount.is_finite() or amount < 0:
            errors[name] = "must be a decimal amount >= 0"
        elif amount > MAX_BUDGET:
            errors[name] = f"must be at most {MAX_BUDGET} USD (or empty for no budget)"
        elif amount != amount.quantize(Decimal("0.0000000001")):
            errors[name] = "has more than 10 decimal places"
        else:
            budgets[name] = amount
    if errors:
        raise ValidationError(errors)
    return ApiKeyLimits(**rates, **budgets)


@transaction.atomic
def api_key_create(
    *, name: str, application: Application, requests_per_minute: Any = None, tokens_per_minute: Any = None,
    daily_budget: Any = None, monthly_budget: Any = None,
) -> tuple[ApiKey, str]:
    """Create a key; return the row and the raw key, which is never stored or shown again."""
    limits = api_key_limits_validate(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                                     daily_budget=daily_budget, monthly_budget=monthly_budget)
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(application=application, name=name, prefix=prefix, key_hash=hash_api_key(raw),
                                **asdict(limits))
    return key, raw


@transaction.atomic
def api_key_set_limits(
    *, key: ApiKey, requests_per_minute: Any = None, tokens_per_minute: Any = None, daily_budget: Any = None,
    monthly_budget: Any = None,
) -> ApiKey:
    """Replace a key's limits; every process picks them up with the key cache (<= 0.5 s)."""
    limits = api_key_limits_validate(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                                     daily_budget=daily_budget, monthly_budget=monthly_budget)
    ApiKey.objects.filter(pk=key.pk).update(**asdict(limits))
    key.refresh_from_db()
    transaction.on_commit(bump_config_version)
    return key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key. Every process refuses it within `GATEWAY_API_KEY_CACHE_MS` (its key cache);
    the config-version bump also clears the caches of processes that check it sooner."""
    if key.revoked_at is None:
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db()
        transaction.on_commit(bump_config_version)
    return key


def feedback_record(*, request_id: uuid.UUID, application_id: int, score: int, thumbs: str, comment: str) -> Feedback:
    """Store (or replace) the feedback for a request, and copy the score onto its decision row."""
    with transaction.atomic():
        feedback, _ = Feedback.objects.update_or_create(
            request_id=request_id,
            application_id=application_id,
            defaults={"score": score, "thumbs": thumbs, "comment": comment},
        )
        rollups_scores_apply(request_id=request_id, application_id=application_id, feedback_score=score)
        Decision.objects.filter(request_id=request_id, application_id=application_id).update(feedback_score=score)
    return feedback


@transaction.atomic
def policy_bootstrap() -> PolicyVersion:
    """Ensure exactly one active policy exists (version 1 with the documented defaults)."""
    active = PolicyVersion.objects.select_for_update().filter(status=PolicyStatus.ACTIVE).first()
    if active is not None:
        return active
    from .catalog_io import catalog_export

    number = (PolicyVersion.objects.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    policy = PolicyVersion.objects.create(
        number=number,
        status=PolicyStatus.ACTIVE,
        registry_snapshot={"routes": catalog_export()["routes"]},
        activated_at=timezone.now(),
        notes="Bootstrap policy with the documented defaults.",
    )
    transaction.on_commit(bump_config_version)
    return policy


def decisions_insert(*, records: Iterable[DecisionRecord | dict[str, Any]], staged: bytes | None = None) -> int:
    """Store decision rows and count them in the dashboard rollups; return how many were stored.

    A row whose request id is already stored, or repeated earlier in the batch, is skipped
    (replays are safe; the first wins). A row whose application or policy version no longer
    exists is kept with that link nulled. Feedback that arrived before its row is copied on.
    The rollups count exactly the rows stored, so a rebuild reproduces them.

    `staged` (PostgreSQL): the records already encoded, each at its position in `records`, by
    `decision_row_encoder()`; ignored on other databases.
    """
    records = list(records)
    if not records:
        return 0
    if connection.vendor == "postgresql":
        try:
            try:
                return _decisions_insert_postgres(records, staged)
            except IntegrityError:
                # A link checked a moment ago vanished before the commit (a concurrent delete):
                # once more, and the check now drops it.
                return _decisions_insert_postgres(records, staged)
        except Exception:
            # What this connection's session was known to hold (the staging table, the prepared
            # rollup statement) is asked again next time: a pooler's `DISCARD ALL` drops both.
            if (raw := connection.connection) is not None:
                _staged_on.discard(raw)
                rollups_forget_connection(raw)
            raise
    return _decisions_insert_orm(records)


# ---- PostgreSQL: COPY into a staging table, INSERT … SELECT, rollups in SQL --------------------

STAGE_TABLE = "routing_decision_stage"
# Raw connections (psycopg) whose session has the staging table (a reconnect starts a new one).
_staged_on: weakref.WeakSet[Any] = weakref.WeakSet()


@dataclass(frozen=True)
class _Staging:
    """How a batch is staged: every decision column but the id, the JSON ones as one JSON array
    per row (`json_values`: one encoder call a row instead of one per column), and the SQL."""

    fields: tuple[Field, ...]  # not JSON; those a `DecisionRecord` carries first
    n_carried: int
    json_fields: tuple[Field, ...]
    encode: Callable[[Any], str]  # `json.dumps(value, cls=<the fields' encoder>)` without its per-call set-up
    create_sql: str
    copy_sql: str
    insert_sql: str


@functools.cache
def _staging() -> _Staging:
    q = connection.ops.quote_name
    carried = {f.name for f in dataclasses.fields(DecisionRecord)}
    columns = [f for f in Decision._meta.concrete_fields if not f.primary_key]
    fields = sorted((f for f in columns if not isinstance(f, models.JSONField)), key=lambda f: f.attname not in carried)
    json_fields = tuple(f for f in columns if isinstance(f, models.JSONField))
    encoders = {f.encoder for f in json_fields}
    if len(encoders) != 1:
        raise ImproperlyConfigured("decision JSON fields with different encoders cannot share `json_values`")
    # No constraints here: the decision table checks the rows as they go in.
    create_sql = (
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} (id bigint, "
        + ", ".join(f"{q(f.column)} {f.db_type(connection)}" for f in fields)
        + ", json_values jsonb) ON COMMIT DELETE ROWS"
    )
    copy_sql = f"COPY {STAGE_TABLE} (id, {', '.join(q(f.column) for f in fields)}, json_values) FROM STDIN"
    # Links to rows that no longer exist are nulled (the ORM path retries without them); feedback
    # that arrived before its row is copied on (the ORM path updates the rows after the insert);
    # JSON null is SQL NULL, as the ORM stores None.
    linked = {"application_id": Application, "policy_version_id": PolicyVersion}  # each joined as its column
    select = [
        f"{q(f.column)}.id" if f.column in linked
        else f"COALESCE(s.{q(f.column)}, fb.{q('score')})" if f.name == "feedback_score"
        else f"s.{q(f.column)}"
        for f in fields
    ]
    select += [f"NULLIF(s.json_values -> {i}, 'null'::jsonb)" for i in range(len(json_fields))]
    joins = " ".join(f"LEFT JOIN {q(model._meta.db_table)} {q(column)} ON {q(column)}.id = s.{q(column)}"
                     for column, model in linked.items())
    joins += (f" LEFT JOIN {q(Feedback._meta.db_table)} fb ON fb.{q('request_id')} = s.{q('request_id')} "
              f"AND fb.{q('application_id')} = {q('application_id')}.id")
    insert_sql = (
        f"INSERT INTO {q(Decision._meta.db_table)} ({', '.join(q(f.column) for f in (*fields, *json_fields))}) "
        f"SELECT {', '.join(select)} FROM {STAGE_TABLE} s {joins} "
        "ORDER BY s.id ON CONFLICT (request_id) DO NOTHING RETURNING id"
    )
    return _Staging(tuple(fields), sum(f.attname in carried for f in fields), json_fields,
                    (encoders.pop() or json.JSONEncoder)().encode, create_sql, copy_sql, insert_sql)


def _stage_row_builder(staging: _Staging) -> Callable[[DecisionRecord | dict[str, Any], int], list[Any]]:
    """A function giving one record's COPY values: its position in the batch, the `fields`, the JSON array.

    Values are what psycopg writes natively (UUID, aware datetime, Decimal, bool, numbers, text);
    JSON is text from the field's encoder, as the ORM writes it. A dict goes through
    `Decision(**values)` as on the ORM path (defaults, unknown names refused); a field a
    `DecisionRecord` lacks gets its default.
    """
    fields, n_carried, json_fields, encode = staging.fields, staging.n_carried, staging.json_fields, staging.encode
    carried = operator.attrgetter(*(f.attname for f in fields[:n_carried]))
    others = fields[n_carried:]
    fresh_defaults = any(f.has_default() and callable(f.default) for f in others)
    defaults = [f.get_default() for f in others]
    names = {f.name for f in dataclasses.fields(DecisionRecord)}
    json_getters = [operator.attrgetter(f.attname) if f.attname in names else (lambda _, f=f: f.get_default())
                    for f in json_fields]
    time_slots = [i + 1 for i, f in enumerate(fields) if isinstance(f, models.DateTimeField)]

    def build(record: DecisionRecord | dict[str, Any], position: int) -> list[Any]:
        if isinstance(record, DecisionRecord):
            values = [position, *carried(record), *([f.get_default() for f in others] if fresh_defaults else defaults),
                      encode([get(record) for get in json_getters])]
        else:
            row = Decision(**record)
            values = [position, *(getattr(row, f.attname) for f in fields),
                      encode([getattr(row, f.attname) for f in json_fields])]
        for i in time_slots:
            if isinstance(values[i], datetime) and timezone.is_naive(values[i]):
                values[i] = timezone.make_aware(values[i])  # as the ORM reads a naive time (with a warning)
        return values

    return build


def decision_row_encoder() -> Callable[[DecisionRecord | dict[str, Any], int], bytes] | None:
    """PostgreSQL: a function giving one record's line of COPY text at a position in its batch,
    for `decisions_insert(staged=...)`; None on other databases.

    The decision writer encodes each row as it arrives (a few tens of microseconds of the
    interpreter lock at a time) rather than a whole batch at flush time, which held the lock for
    milliseconds and stalled the requests being served meanwhile. The bytes are psycopg's own
    COPY text formatting (`Copy.write_row` uses the same formatter) with the global adapters,
    which are what Django's connections use for these types (it registers loaders, and a
    dumper only for ranges); the client encoding is UTF-8 (Django sets it).
    """
    if connection.vendor != "postgresql":
        return None
    from psycopg._copy_base import TextFormatter  # not exported; the formatter `Copy.write_row` calls
    from psycopg.adapt import Transformer

    build = _stage_row_builder(_staging())
    formatter = TextFormatter(Transformer())

    def encode(record: DecisionRecord | dict[str, Any], position: int) -> bytes:
        formatter.write_row(build(record, position))
        return bytes(formatter.end())

    return encode


def _decisions_insert_postgres(records: list[DecisionRecord | dict[str, Any]], staged: bytes | None = None) -> int:
    """1. COPY the batch into a per-connection temporary staging table (created here when this
       connection has none yet, so that reconnecting is harmless; emptied at commit; a connection
       where its creation has committed is not asked again);
    2. take the rollup lock (a rebuild never sees half of an insert);
    3. INSERT … SELECT … ORDER BY position ON CONFLICT (request_id) DO NOTHING RETURNING id,
       early feedback joined on: exactly the rows stored, no separate look-up of known ids (a
       repeat inside the batch conflicts with the row an earlier position just stored: the first
       wins);
    4. add those rows, as stored, to the hour and day rollups with the rebuild's own aggregate
       (`dashboard.services.rollups_apply_stored`).
    All in one transaction: a failure leaves neither rows nor rollup increments.
    """
    staging = _staging()
    nested = connection.in_atomic_block  # then the commit that empties the staging table comes later
    with transaction.atomic(), connection.cursor() as cursor:
        raw = connection.connection
        if raw not in _staged_on:
            cursor.execute(staging.create_sql)
            # Known to exist once committed (a rollback undoes the CREATE): then not asked again.
            transaction.on_commit(lambda: _staged_on.add(raw))
        if nested:
            cursor.execute(f"TRUNCATE {STAGE_TABLE}")  # rows an earlier call staged in the caller's transaction
        # Django's wrapper has no COPY: its psycopg cursor does, on the same connection and transaction
        # (errors raised as Django's, as for any statement).
        with connection.wrap_database_errors, cursor.cursor.copy(staging.copy_sql) as copy:
            if staged is not None:
                copy.write(staged)
            else:
                build = _stage_row_builder(staging)
                for position, record in enumerate(records):
                    copy.write_row(build(record, position))
        rollups_lock()
        cursor.execute(staging.insert_sql)
        ids = [row[0] for row in cursor.fetchall()]
        rollups_apply_stored(decision_ids=ids)
    return len(ids)


# ---- other databases (SQLite): the ORM ----------------------------------------------------------

def _decision_rows(records: Iterable[DecisionRecord | dict[str, Any]]) -> list[Decision]:
    rows = []
    for record in records:
        values = asdict(record) if isinstance(record, DecisionRecord) else dict(record)
        rows.append(Decision(**values))
    return rows


def _decisions_insert_orm(records: list[DecisionRecord | dict[str, Any]]) -> int:
    """`rollups_apply` counts the rows the `bulk_create(ignore_conflicts=True)` after it will store."""
    rows = _decision_rows(records)
    try:
        with transaction.atomic():
            stored = rollups_apply(rows)  # dashboard rollups: counts only the rows this insert stores
            Decision.objects.bulk_create(rows, ignore_conflicts=True)
    except IntegrityError:
        # A foreign key that vanished (deleted application or policy): keep the row, drop the link.
        for row in rows:
            row.application_id = None if not Application.objects.filter(pk=row.application_id).exists() else row.application_id
            row.policy_version_id = (
                None if not PolicyVersion.objects.filter(pk=row.policy_version_id).exists() else row.policy_version_id
            )
        with transaction.atomic():
            stored = rollups_apply(rows)  # dashboard rollups: counts only the rows this insert stores
            Decision.objects.bulk_create(rows, ignore_conflicts=True)
    # Feedback can arrive before the row is written: copy it on.
    ids = [row.request_id for row in rows]
    for fb in Feedback.objects.filter(request_id__in=ids):
        Decision.objects.filter(
            request_id=fb.request_id, application_id=fb.application_id, feedback_score__isnull=True
        ).update(feedback_score=fb.score)
    return stored
