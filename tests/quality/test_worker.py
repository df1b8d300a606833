"""The judge task on a real Celery worker (broker mode only; the eager path is test_judge_and_drift.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from audits.models import JudgeAudit
from audits.sampling import sample_store

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.celery_worker
def test_a_real_celery_worker_scores_a_sampled_answer(catalog, emulator):
    if django_settings.CELERY_TASK_ALWAYS_EAGER:
        pytest.skip("no broker configured: tasks run in-process (tests/quality/test_judge_and_drift.py)")
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("the broker run must use PostgreSQL so the worker can share the test database")

    class Rec:
        request_id = uuid.uuid4()
        route, executor_model, confidence = "simple_qa", "claude-haiku-4-5", 0.9

    sample_store(record=Rec, prompt="What is the capital of Peru?",
                 answer="[emulated claude-haiku-4-5] Lima is the capital of Peru.", probability=1.0)
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "SECRET_KEY": "worker-test", "EMULATOR_URL": emulator.url,
           "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "", "GEMINI_API_KEY": ""}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--loglevel=WARNING", "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from audits.tasks import judge_audit

        judge_audit.delay(str(Rec.request_id))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            audit = JudgeAudit.objects.get(request_id=Rec.request_id)
            if audit.status in ("scored", "failed"):
                break
            time.sleep(0.2)
        assert audit.status == "scored", audit.error
        assert 1 <= audit.score <= 5
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
