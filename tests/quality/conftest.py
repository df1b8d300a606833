"""Quality fixtures: governance personas, in-process Celery for workflow tests, a clean sampler."""

from __future__ import annotations

import pytest

from tests.audits.conftest import make_persona, people  # noqa: F401 - re-exported fixture


@pytest.fixture
def eager(settings):
    """Run Celery tasks in-process even when CI points Celery at a broker: these tests are about
    the workflow; the real-worker path is tests/quality/test_worker.py."""
    from config.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def sampler():
    from audits.sampling import get_sampler

    s = get_sampler()
    s.invalidate()
    yield s
    s.flush()
    s.invalidate()


def judge_everything(rate: str = "1") -> None:
    from routing.models import PolicyStatus, PolicyVersion
    from routing.services import bump_config_version

    PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE).update(judge_sample_rate=rate)
    bump_config_version()
