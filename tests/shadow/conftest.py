"""Shadow experiment fixtures: governance personas, in-process Celery, a clean sampler, and builders
for experiments and hand-made decision rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from tests.audits.conftest import make_persona, people, small_evalset  # noqa: F401 - re-exported fixtures
from tests.quality.conftest import eager, sampler  # noqa: F401 - re-exported fixtures


@pytest.fixture(autouse=True)
def _tasks_in_process(eager):  # noqa: F811 - the re-exported fixture
    """Shadow tests run Celery tasks in-process even when CI points Celery at a broker (no worker
    runs during them); the tests that prove the response path never waits hold the task back."""
    yield


def candidate_version(**changes: Any):
    """A draft version: the active one with `changes` applied."""
    from audits.selectors import POLICY_FIELDS, active_policy_version
    from routing.models import PolicyStatus, PolicyVersion

    active = active_policy_version()
    values = {name: getattr(active, name) for name in POLICY_FIELDS}
    values.update(changes)
    number = PolicyVersion.objects.order_by("-number").values_list("number", flat=True).first() + 1
    return PolicyVersion.objects.create(number=number, status=PolicyStatus.DRAFT, **values)


def experiment(*, status: str = "running", rate: str = "1", candidate=None, **changes: Any):
    from audits.models import ShadowExperiment

    now = timezone.now()
    return ShadowExperiment.objects.create(
        name="threshold test", candidate=candidate or candidate_version(**(changes or {"confidence_threshold":
                                                                                       Decimal("0.990")})),
        sample_rate=Decimal(rate), window_start=now - timedelta(hours=1), window_end=now + timedelta(days=1),
        status=status,
    )


def decision_row(*, route: str = "simple_qa", confidence: float = 0.9, executor_cost: str = "0.001",
                 judge_score: int | None = None, request_id: uuid.UUID | None = None, **fields: Any):
    """A production decision row as the recorder would write it (accepted sentinel decision)."""
    from audits.selectors import active_policy_version
    from routing.models import Decision

    decision = {"route": route, "confidence": confidence, "reasoning_depth_needed": "none", "tools_required": [],
                "estimated_output_tokens": 50, "route_override_attempted": False}
    values: dict[str, Any] = {
        "request_id": request_id or uuid.uuid4(), "endpoint": "complete", "policy_version": active_policy_version(),
        "sentinel_kind": "llm", "sentinel_decision": decision, "route_decided": route, "confidence": confidence,
        "route": route, "policy_reason": "sentinel decision accepted", "executor_cost": Decimal(executor_cost),
        "cost": Decimal(executor_cost), "judge_score": judge_score,
    }
    values.update(fields)
    return Decision.objects.create(**values)
