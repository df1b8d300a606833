"""Dashboard fixtures: named personas and decision rows written through `decisions_insert`."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

ROLES = ("engineer", "reviewer", "finance")


def decision_row(**overrides) -> dict:
    """One decision record as the gateway hands it to `decisions_insert`."""
    row = dict(
        request_id=uuid.uuid4(), created_at=datetime(2026, 5, 4, 10, 30, tzinfo=UTC), application_id=None,
        api_key_prefix="", endpoint="complete", policy_version_id=None, sentinel_kind="llm",
        sentinel_model="claude-haiku-4-5", sentinel_decision=None, sentinel_error="", route_decided="simple_qa",
        confidence=0.92, route="simple_qa", policy_reason="", escalated=False, executor_provider="anthropic",
        executor_model="claude-haiku-4-5", executor_model_version="claude-haiku-4-5-20251001",
        sentinel_input_tokens=300, sentinel_output_tokens=40, sentinel_cached_tokens=0,
        executor_input_tokens=1000, executor_output_tokens=200, executor_cached_tokens=100,
        executor_cache_write_tokens=0, sentinel_ms=150.0, executor_ms=900.0, overhead_ms=3.0, total_ms=1053.0,
        sentinel_cost=Decimal("0.0005000000"), executor_cost=Decimal("0.0019100000"),
        cost=Decimal("0.0024100000"), baseline_cost=Decimal("0.0095500000"), status="ok", error="",
        stream=False, attempts=1, simulated=False, metadata={},
    )
    row.update(overrides)
    return row


ROUTES = [("simple_qa", "claude-haiku-4-5"), ("complex_reasoning", "claude-opus-4-7"),
          ("code_generation", "gpt-5.1-codex"), ("refusal_required", "guardrail")]


def random_rows(n: int, *, seed: int = 7, start: datetime | None = None, hours: int = 60, apps=(None,)) -> list[dict]:
    rng = random.Random(seed)
    start = start or datetime(2026, 5, 3, 22, 0, tzinfo=UTC)
    rows = []
    for _ in range(n):
        route, model = rng.choice(ROUTES)
        cost = Decimal(rng.randint(0, 10**8)) / Decimal(10**10)
        sentinel = Decimal(rng.randint(0, 10**6)) / Decimal(10**10)
        rows.append(decision_row(
            created_at=start + timedelta(seconds=rng.randint(0, hours * 3600 - 1)),
            application_id=rng.choice(apps), route=route, executor_model=model,
            confidence=rng.choice([None, 0.1, 0.5, 0.55, 0.6, 0.75, 0.8, 0.9, 0.99, 1.0]),
            executor_input_tokens=rng.randint(0, 5000), executor_output_tokens=rng.randint(0, 2000),
            executor_cached_tokens=rng.randint(0, 50), sentinel_input_tokens=rng.randint(0, 800),
            sentinel_ms=rng.choice([0.0, 0.5, 1.0, 4.99, 5.0, 250.0, 1999.9, 70000.0]),
            executor_ms=rng.uniform(0, 12000), overhead_ms=rng.uniform(0, 30),
            sentinel_cost=sentinel, executor_cost=cost, cost=cost + sentinel,
            baseline_cost=Decimal(rng.randint(0, 10**9)) / Decimal(10**10),
            feedback_score=rng.choice([None, None, 1, 3, 4, 5]), judge_score=rng.choice([None, None, 2, 4, 5]),
            status=rng.choice(["ok", "ok", "ok", "error"]), simulated=rng.random() < 0.3,
        ))
        if cache_hit_field():
            rows[-1]["cache_hit"] = rng.random() < 0.2
    return rows


def cache_hit_field() -> bool:
    from dashboard.services import has_cache_hit_field

    return has_cache_hit_field()


@pytest.fixture
def personas(db):
    """engineer, reviewer, finance (each in its group) and an outsider with no group."""
    User = get_user_model()
    users = {}
    for role in ROLES:
        user = User.objects.create_user(username=f"{role}-user", password="pw")
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        users[role] = user
    users["outsider"] = User.objects.create_user(username="outsider", password="pw")
    return users
