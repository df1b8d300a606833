"""The decision log never loses a row: a failed write is spooled to disk and replayed,
replays never duplicate, and the replay task runs on a real Celery worker when a broker is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from routing.engine.dispatch import DecisionRecord
from routing.models import Decision
from routing.recorder import DecisionRecorder, replay_spool_file

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent


def make_record(**overrides) -> DecisionRecord:
    values = dict(
        request_id=uuid.uuid4(), created_at=timezone.now(), application_id=None, api_key_prefix="abcd",
        endpoint="complete", policy_version_id=None, sentinel_kind="llm", sentinel_model="claude-haiku-4-5",
        sentinel_decision={"route": "simple_qa"}, sentinel_error="", route_decided="simple_qa", confidence=0.9,
        route="simple_qa", policy_reason="sentinel decision accepted", escalated=False,
        executor_provider="anthropic", executor_model="claude-haiku-4-5",
        executor_model_version="claude-haiku-4-5-20251001", sentinel_input_tokens=500, sentinel_output_tokens=40,
        sentinel_cached_tokens=400, executor_input_tokens=20, executor_output_tokens=100,
        executor_cached_tokens=0, executor_cache_write_tokens=0, sentinel_ms=120.0, executor_ms=800.0,
        overhead_ms=1.5, total_ms=921.5, sentinel_cost=Decimal("0.0002400000"),
        executor_cost=Decimal("0.0005200000"), cost=Decimal("0.0007600000"), baseline_cost=Decimal("0.0026000000"),
        status="ok", error="", stream=False, attempts=1, simulated=True, metadata={},
    )
    values.update(overrides)
    return DecisionRecord(**values)


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def sessions_since(start) -> int:
    """Database sessions opened since `start` and still open, other than this one (the writer's, here)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND backend_start >= %s",
                       [start])
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="counts sessions in pg_stat_activity")
def test_the_writer_keeps_one_connection_while_rows_come_and_closes_it_once_they_stop(tmp_path):
    """Batch after batch on one session (not a new connection per batch, ~20 ms of the serving
    process's CPU each), closed once no row has come for `idle_close_s`."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        start = cursor.fetchone()[0]
    recorder = DecisionRecorder(spool_dir=tmp_path, flush_ms=30, idle_close_s=1.0)
    try:
        records = []
        for _ in range(8):  # a row every ~50 ms: each batch empties the queue
            records.append(make_record())
            recorder.record(records[-1])
            time.sleep(0.05)
        assert recorder.flush(10)
        assert Decision.objects.filter(request_id__in=[r.request_id for r in records]).count() == 8
        assert sessions_since(start) == 1, "the writer closed its connection between batches"
        assert wait_until(lambda: sessions_since(start) == 0, timeout=5), "the idle writer kept its connection"
        recorder.record(make_record())  # rows again: a connection again
        assert recorder.flush(10) and Decision.objects.count() == 9 and sessions_since(start) == 1
    finally:
        recorder.close()


def test_rows_are_spooled_while_the_table_is_away_and_replayed_once_it_is_back(tmp_path):
    recorder = DecisionRecorder(spool_dir=tmp_path, batch_size=50, flush_ms=50)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE routing_decision RENAME TO routing_decision_away")
    try:
        records = [make_record() for _ in range(3)]
        for record in records:
            recorder.record(record)
        assert recorder.flush(10)
        assert recorder.spool_files(), "a failed write must leave a spool file"
        assert recorder.spooled == 3
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE routing_decision_away RENAME TO routing_decision")
    assert wait_until(lambda: not recorder.spool_files()), "the spool was not replayed"
    stored = sorted(str(x) for x in Decision.objects.values_list("request_id", flat=True))
    assert stored == sorted(str(r.request_id) for r in records)
    row = Decision.objects.get(request_id=records[0].request_id)
    assert row.cost == Decimal("0.0007600000") and row.created_at == records[0].created_at
    recorder.close()


def test_replaying_the_same_spool_twice_does_not_duplicate_rows(tmp_path):
    recorder = DecisionRecorder(spool_dir=tmp_path)
    records = [make_record() for _ in range(4)]
    recorder._spool(records)
    path = recorder.spool_files()[0]
    copy = tmp_path / "decisions-0-copy.jsonl"
    shutil.copy(path, copy)
    assert replay_spool_file(path) and replay_spool_file(copy)
    assert Decision.objects.count() == 4


def _spool_for_task(spool_dir: Path, n: int) -> list[DecisionRecord]:
    recorder = DecisionRecorder(spool_dir=spool_dir)
    records = [make_record() for _ in range(n)]
    recorder._spool(records)
    return records


def test_the_replay_task_drains_the_spool(tmp_path, settings):
    """In-process (eager) when no broker is configured; a real worker is tested below."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        pytest.skip("covered by the real-worker test in broker mode")
    from routing.tasks import replay_decision_spool

    settings.DECISION_SPOOL_DIR = str(tmp_path)
    records = _spool_for_task(tmp_path, 5)
    assert replay_decision_spool.delay().get() == 1
    assert Decision.objects.filter(request_id__in=[r.request_id for r in records]).count() == 5


@pytest.mark.celery_worker
def test_a_real_celery_worker_replays_the_spool(tmp_path):
    if django_settings.CELERY_TASK_ALWAYS_EAGER:
        if os.environ.get("CELERY_BROKER_URL"):
            pytest.fail("CELERY_BROKER_URL is set but tasks are eager")
        pytest.skip("no broker configured: the embedded run executes tasks in-process (test above)")
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("the broker run must use PostgreSQL so the worker can share the test database")
    records = _spool_for_task(tmp_path, 7)
    env = {**os.environ, "DECISION_SPOOL_DIR": str(tmp_path),
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "SECRET_KEY": "worker-test"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--loglevel=WARNING", "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from routing.tasks import replay_decision_spool

        replay_decision_spool.delay()
        ids = [r.request_id for r in records]
        assert wait_until(lambda: Decision.objects.filter(request_id__in=ids).count() == 7, timeout=60), (
            "the worker did not replay the spool")
        assert not list(tmp_path.glob("decisions-*.jsonl"))
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
