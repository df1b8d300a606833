"""Decision-log ingestion on PostgreSQL: COPY into a staging table, INSERT … ON CONFLICT, rollups in SQL.

`routing.services.decisions_insert` keeps the ORM path's guarantees: a request id is stored once
(repeats in a batch, replays of stored rows), a row whose application or policy version vanished
is kept with the link nulled, early feedback is copied on, and the rollups count exactly the
stored rows, so that a rebuild from the raw rows gives the same numbers. It also stores exactly
what the ORM path stores. Skipped unless DATABASE_URL is postgres://…
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from dashboard.models import RollupDay, RollupHour
from dashboard.services import rollups_rebuild_all
from routing.models import Application, Decision, Feedback, PolicyVersion
from routing.services import _decisions_insert_orm, decision_row_encoder, decisions_insert
from tests.dashboard.conftest import decision_row, random_rows
from tests.dashboard.test_rollups import assert_exact, stored
from tests.test_decision_log import make_record

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="the COPY path needs DATABASE_URL=postgres://…")


@pytest.fixture
def apps(db) -> list[int]:
    return [Application.objects.create(name=f"ingest-app-{i}").pk for i in range(3)]


def assert_rollups_match_a_full_rebuild() -> None:
    """Insert-time rollups equal those `rollups_rebuild_all` recomputes from the raw rows."""
    before = (stored(RollupHour), stored(RollupDay))
    rollups_rebuild_all()
    after = (stored(RollupHour), stored(RollupDay))
    for incremental, rebuilt in zip(before, after, strict=True):
        assert set(incremental) == set(rebuilt)
        for cell, measures in incremental.items():
            for name, value in measures.items():
                if isinstance(value, float):
                    assert rebuilt[cell][name] == pytest.approx(value, abs=1e-6), (cell, name)
                else:
                    assert rebuilt[cell][name] == value, (cell, name)


def test_a_request_id_is_stored_once_whether_repeated_in_a_batch_or_replayed(apps):
    rows = random_rows(60, apps=(None, *apps))
    first = dict(rows[10], route="first-copy")
    later = dict(rows[10], route="later-copy")
    assert decisions_insert(records=[*rows[:40], first, later]) == 40  # rows[10] three times: stored once
    assert Decision.objects.get(request_id=rows[10]["request_id"]).route == rows[10]["route"]  # the first wins
    assert decisions_insert(records=rows[20:] + rows[50:55]) == 20  # a replay overlapping what is stored
    assert decisions_insert(records=rows) == 0
    assert Decision.objects.count() == 60
    assert RollupDay.objects.count() and sum(RollupDay.objects.values_list("requests", flat=True)) == 60
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")


@pytest.mark.django_db(transaction=True)
def test_rows_whose_application_or_policy_vanished_are_kept_without_the_link(apps):
    policy = PolicyVersion.objects.create(number=7, status="superseded")
    rows = random_rows(12, apps=(apps[0],))
    rows[2]["application_id"] = 999_999
    rows[5]["policy_version_id"] = 888_888
    rows[6]["policy_version_id"] = policy.pk
    assert decisions_insert(records=rows) == 12  # committed here: the deferred foreign keys are checked
    links = dict(Decision.objects.values_list("request_id", "application_id"))
    assert links[rows[2]["request_id"]] is None and links[rows[3]["request_id"]] == apps[0]
    policies = dict(Decision.objects.values_list("request_id", "policy_version_id"))
    assert policies[rows[5]["request_id"]] is None and policies[rows[6]["request_id"]] == policy.pk
    assert_exact(RollupHour, "hour")
    assert_rollups_match_a_full_rebuild()


@pytest.mark.django_db(transaction=True)
def test_an_application_deleted_while_the_insert_commits_is_dropped_on_the_retry(apps):
    """The link is checked when the rows go in; a delete that commits between that check and the
    insert's commit fails the commit (deferred foreign key), and the one retry drops the link."""
    victim = Application.objects.create(name="deleted-meanwhile").pk
    decisions_insert(records=[decision_row(application_id=apps[0])])  # warm: SQL compiled, staging table made
    deleting, hold_s = threading.Event(), 1.0

    def delete_and_hold() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM routing_application WHERE id = %s", [victim])
            deleting.set()
            time.sleep(hold_s)  # the insert reaches its commit meanwhile, and waits on this row
        connection.close()

    deleter = threading.Thread(target=delete_and_hold)
    deleter.start()
    assert deleting.wait(5)
    row = decision_row(application_id=victim)
    started = time.monotonic()
    assert decisions_insert(records=[row]) == 1
    deleter.join()
    assert time.monotonic() - started >= hold_s / 2, "the insert did not wait for the delete's commit"
    assert Decision.objects.get(request_id=row["request_id"]).application_id is None
    assert Decision.objects.count() == 2
    assert_exact(RollupHour, "hour")
    assert_rollups_match_a_full_rebuild()


def test_feedback_that_arrived_first_is_copied_onto_its_row_and_counted(apps):
    rows = random_rows(20, apps=(apps[0], apps[1]))
    for row in rows:
        row["feedback_score"] = None
    Feedback.objects.create(request_id=rows[3]["request_id"], application_id=rows[3]["application_id"], score=5)
    Feedback.objects.create(request_id=rows[4]["request_id"], application_id=apps[2], score=1)  # another app's
    rows[5]["feedback_score"] = 2  # the row's own score stands
    Feedback.objects.create(request_id=rows[5]["request_id"], application_id=rows[5]["application_id"], score=5)
    decisions_insert(records=rows)
    scores = dict(Decision.objects.values_list("request_id", "feedback_score"))
    assert scores[rows[3]["request_id"]] == 5
    assert scores[rows[4]["request_id"]] is None
    assert scores[rows[5]["request_id"]] == 2
    assert sum(RollupDay.objects.values_list("feedback_count", flat=True)) == 2
    assert_exact(RollupDay, "day")
    assert_rollups_match_a_full_rebuild()


def test_rollups_after_many_inserts_equal_a_full_rebuild(apps):
    rows = random_rows(700, apps=(None, *apps), hours=80, seed=3)
    for row in rows[::7]:
        row["feedback_score"] = None
        Feedback.objects.create(request_id=row["request_id"], application_id=apps[0], score=4)
        row["application_id"] = apps[0]
    for start in range(0, 600, 113):
        decisions_insert(records=rows[start:start + 113] + rows[start:start + 5])
    decisions_insert(records=rows[550:])  # overlaps the last batch
    assert Decision.objects.count() == 700
    assert_exact(RollupHour, "hour")
    assert_exact(RollupDay, "day")
    assert_rollups_match_a_full_rebuild()


def test_it_stores_exactly_what_the_orm_path_stores(apps):
    """Money, JSON (SQL NULL for None), UUIDs, times in any zone, defaults, DecisionRecords and dicts;
    also when the rows come encoded as the decision writer encodes them on arrival (`staged`)."""
    policy = PolicyVersion.objects.create(number=9, status="superseded")
    plus_two = timezone(timedelta(hours=2))
    variants = [
        make_record(application_id=apps[1], policy_version_id=policy.pk, sentinel_decision=None,
                    local_decision={"route": "simple_qa", "p": [0.25, 0.75], "unicode": "né\t\"x\"\n\\"},
                    metadata={"user": "a\u00e9", "nested": {"n": [1, None, True]}}, guard_flags=["override"],
                    attempt_log=[{"target": "m", "outcome": "ok", "ms": 12.5}], cache_hit=True,
                    cost=Decimal("0.0000000001"), baseline_cost=Decimal("12345.1234567891"),
                    speculative_waste_cost=Decimal("0.5"), created_at=datetime(2026, 5, 4, 12, 0, 1, 7, plus_two),
                    error="tab\there, newline\nthere, backslash \\ and quote '", confidence=None),
        decision_row(application_id=apps[2], created_at=datetime(2026, 5, 4, 23, 59, 59, 999999, tzinfo=UTC),
                     sentinel_decision={"route": "code_generation"}, feedback_score=3, judge_score=5),
        {"request_id": uuid.uuid4(), "created_at": datetime(2026, 5, 5, 1, 2, 3, tzinfo=UTC), "route": "fallback",
         "endpoint": "complete", "sentinel_kind": "bypass", "policy_reason": "defaults for everything else"},
    ]
    as_dicts = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in variants]
    twins = [{**values, "request_id": uuid.uuid4()} for values in as_dicts]
    assert decisions_insert(records=variants) == 3
    assert _decisions_insert_orm(twins) == 3
    encode = decision_row_encoder()
    pre_encoded = [dataclasses.replace(v, request_id=uuid.uuid4()) if dataclasses.is_dataclass(v)
                   else {**v, "request_id": uuid.uuid4()} for v in variants]
    staged = b"".join(encode(record, position) for position, record in enumerate(pre_encoded))
    assert decisions_insert(records=pre_encoded, staged=staged) == 3
    fields = [f.attname for f in Decision._meta.concrete_fields if f.attname not in ("id", "request_id")]
    for values, twin, early in zip(as_dicts, twins, pre_encoded, strict=True):
        copied = Decision.objects.values(*fields).get(request_id=values["request_id"])
        through_orm = Decision.objects.values(*fields).get(request_id=twin["request_id"])
        encoded_first = Decision.objects.values(*fields).get(
            request_id=early.request_id if dataclasses.is_dataclass(early) else early["request_id"])
        assert copied == through_orm == encoded_first
    first = Decision.objects.get(request_id=as_dicts[0]["request_id"])
    assert first.sentinel_decision is None and first.local_decision["unicode"] == "né\t\"x\"\n\\"
    assert first.cost == Decimal("0.0000000001") and first.created_at == datetime(2026, 5, 4, 10, 0, 1, 7, UTC)
    assert Decision.objects.filter(sentinel_decision__isnull=True).count() == 6  # SQL NULL, not JSON null


def test_an_unknown_field_or_a_bad_value_fails_the_batch_as_on_the_orm_path(db):
    with pytest.raises(TypeError):
        decisions_insert(records=[decision_row(not_a_field=1)])
    with pytest.raises(DataError):  # Django's error, as for any statement, though COPY bypasses its cursor
        decisions_insert(records=[decision_row(), decision_row(route="r" * 65)])
    with pytest.raises(IntegrityError):
        decisions_insert(records=[decision_row(executor_input_tokens=-1)])
    assert not Decision.objects.exists() and not RollupHour.objects.exists()


def test_a_batch_costs_the_same_few_statements_whatever_its_size(apps):
    """COPY (not captured: it bypasses Django's cursor wrapper) plus a fixed handful of statements."""
    statements = []
    for n in (5, 400, 7):
        with CaptureQueriesContext(connection) as queries:
            decisions_insert(records=random_rows(n, apps=(None, *apps), seed=n))
        statements.append([q["sql"].split()[0] + (" pg_prepared_statements" if "pg_prepared_statements" in q["sql"]
                                                   else "") for q in queries])
    # Here, in the test's transaction: a savepoint around it, and the staging table emptied first.
    # The rollup statement is prepared once per connection (by the first batch on it: here, or an
    # earlier test's on the same connection), then executed.
    assert [sql for sql in statements[0] if sql not in ("PREPARE", "SELECT pg_prepared_statements")] \
        == statements[1] == statements[2] == [
        "SAVEPOINT", "CREATE", "TRUNCATE", "SELECT", "INSERT", "EXECUTE", "RELEASE"], statements


@pytest.mark.django_db(transaction=True)
def test_the_rollup_statement_is_prepared_once_per_connection_and_again_after_a_reconnect_or_a_failure(apps):
    """…and the staging table created once; after a failed insert both are asked about again, and
    a session that lost them (a pooler's DISCARD ALL) gets them back."""
    seen: list[tuple[int, int, int]] = []

    def insert(n: int = 3) -> None:
        with CaptureQueriesContext(connection) as queries:
            decisions_insert(records=random_rows(n, apps=apps, seed=len(seen)))
        sqls = [q["sql"] for q in queries]
        seen.append((sum(s.startswith("CREATE TEMP") for s in sqls), sum("pg_prepared_statements" in s for s in sqls),
                     sum(s.startswith("PREPARE") for s in sqls)))

    insert(), insert()
    connection.close()
    insert(), insert()
    assert seen[1] == seen[3] == (0, 0, 0) and seen[2] == (1, 1, 1), seen
    with connection.cursor() as cursor:
        cursor.execute("DISCARD ALL")  # what a pooler resets a session with: temporary tables and statements gone
    with pytest.raises(Exception, match="routing_decision_stage"):
        insert()  # this connection still thinks it has them: the batch fails (the recorder spools it)
    insert(), insert()  # asked again: created and prepared once more
    assert seen[-2:] == [(1, 1, 1), (0, 0, 0)], seen
    assert Decision.objects.count() == 18
    assert_rollups_match_a_full_rebuild()


@pytest.mark.django_db(transaction=True)
def test_the_staging_table_survives_commits_and_reconnects(apps):
    """Created lazily per connection (ON COMMIT DELETE ROWS): committed batches leave nothing
    behind for the next, and a new connection makes its own."""
    rows = random_rows(30, apps=(None, *apps), seed=5)
    assert decisions_insert(records=rows[:10]) == 10
    assert decisions_insert(records=rows[10:20]) == 10
    connection.close()
    assert decisions_insert(records=rows[15:]) == 10
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM routing_decision_stage")
        assert cursor.fetchone()[0] == 0
    assert Decision.objects.count() == 30
    assert_exact(RollupHour, "hour")
    assert_rollups_match_a_full_rebuild()


def test_two_inserts_in_one_caller_transaction_each_store_their_own_rows(apps):
    """Inside a caller's transaction the staging table is not emptied by a commit in between."""
    rows = random_rows(20, apps=(None, *apps), seed=8)
    with transaction.atomic():
        assert decisions_insert(records=rows[:10]) == 10
        assert decisions_insert(records=rows[10:]) == 10
    assert Decision.objects.count() == 20
    assert_exact(RollupDay, "day")
