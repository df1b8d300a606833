"""Shadow sampling and the `audits.shadow_route` task: the rate holds, the task is idempotent,
the candidate never calls an executor, and nothing of it runs on the response path."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from audits.models import ShadowCapture, ShadowDecision
from audits.sampling import ShadowTarget
from audits.tasks import shadow_route

from .conftest import candidate_version, decision_row, experiment


def test_20k_requests_are_shadow_sampled_at_the_experiment_rate_inside_the_window_only():
    now = datetime(2026, 1, 1, 12, 0)
    target = ShadowTarget(1, 2, 0.05, now - timedelta(hours=1), now + timedelta(hours=1))
    rng = random.Random(7)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(20_000)]
    hits = sum(target.samples(rid, now) for rid in ids)
    se = (0.05 * 0.95 / 20_000) ** 0.5
    assert abs(hits / 20_000 - 0.05) < 4 * se
    assert [target.samples(rid, now) for rid in ids[:50]] == [target.samples(str(rid), now) for rid in ids[:50]]
    assert not any(target.samples(rid, now + timedelta(hours=2)) for rid in ids[:500])
    assert all(ShadowTarget(1, 2, 1.0, target.window_start, target.window_end).samples(rid, now) for rid in ids[:500])
    assert not any(ShadowTarget(1, 2, 0.0, target.window_start, target.window_end).samples(rid, now)
                   for rid in ids[:500])


def capture(exp, row, *, prompt: str = "", needs: bool = False) -> None:
    ShadowCapture.objects.create(experiment=exp, request_id=row.request_id, prompt=prompt, needs_sentinel=needs)


@pytest.mark.django_db
def test_the_task_reuses_production_decision_and_is_idempotent(catalog, emu):
    exp = experiment()  # candidate: threshold 0.99, same sentinel → no model call
    row = decision_row(route="simple_qa", confidence=0.9)
    capture(exp, row)
    assert shadow_route.apply(args=[exp.pk, str(row.request_id)]).get() == "decided"
    assert shadow_route.apply(args=[exp.pk, str(row.request_id)]).get() == "skipped: already decided"
    shadow = ShadowDecision.objects.get(experiment=exp)
    assert ShadowDecision.objects.count() == 1
    assert shadow.production_route == "simple_qa" and shadow.candidate_route == "complex_reasoning"
    assert shadow.candidate_escalated and "below threshold 0.99" in shadow.candidate_reason
    assert shadow.candidate_sentinel_cost == 0 and not shadow.candidate_sentinel_called
    assert sum(emu.stats()["by_kind"].values()) == 0


@pytest.mark.django_db
def test_a_claimed_capture_is_not_processed_twice(catalog):
    exp = experiment()
    row = decision_row()
    capture(exp, row)
    ShadowCapture.objects.update(claimed_at=timezone.now())  # another worker has it
    assert shadow_route.apply(args=[exp.pk, str(row.request_id)]).get().startswith("skipped")
    assert not ShadowDecision.objects.exists()


@pytest.mark.django_db
def test_without_the_decision_row_the_task_waits_and_releases_its_claim(catalog):
    exp = experiment()
    rid = uuid.uuid4()
    ShadowCapture.objects.create(experiment=exp, request_id=rid)
    assert shadow_route.apply(args=[exp.pk, str(rid)]).get().startswith("not yet")
    assert ShadowCapture.objects.get().claimed_at is None


@pytest.mark.django_db
def test_a_different_sentinel_is_called_and_costed_but_no_executor_ever_is(catalog, emu):
    from routing.models import PolicyVersion

    active = PolicyVersion.objects.get(status="active")
    exp = experiment(candidate=candidate_version(sentinel_provider="openai", sentinel_model="gpt-5.4-nano",
                                                 sentinel_model_version="gpt-5.4-nano"))
    assert active.sentinel_provider != "openai"
    row = decision_row(route="simple_qa")
    capture(exp, row, prompt="What is the capital of Peru?", needs=True)
    before = emu.stats()["by_kind"]
    assert shadow_route.apply(args=[exp.pk, str(row.request_id)]).get() == "decided"
    after = emu.stats()["by_kind"]
    assert after["executor"] == before["executor"] == 0
    assert after["sentinel"] == before["sentinel"] + 1
    shadow = ShadowDecision.objects.get()
    assert shadow.candidate_sentinel_called and shadow.candidate_sentinel_cost > 0
    assert shadow.candidate_decision["route"] == "simple_qa"
    assert ShadowCapture.objects.get().prompt == ""  # the prompt is not kept once decided


@dataclass
class FakeRecord:
    request_id: uuid.UUID
    created_at: datetime
    route: str = "simple_qa"
    sentinel_kind: str = "llm"
    policy_version_id: int | None = None


@pytest.mark.django_db(transaction=True)
def test_the_offer_captures_the_prompt_only_when_the_candidate_needs_its_sentinel(catalog, sampler, monkeypatch):
    from audits import tasks
    from routing.models import PolicyVersion

    queued: list[tuple] = []
    monkeypatch.setattr(tasks.shadow_route, "delay", lambda *args: queued.append(args))
    active = PolicyVersion.objects.get(status="active")
    same = experiment()
    other = experiment(candidate=candidate_version(sentinel_mode="local"))
    record = FakeRecord(uuid.uuid4(), timezone.now(), policy_version_id=active.pk)
    sampler.shadow_offer(record, "What is the capital of Peru?")
    sampler.shadow_offer(FakeRecord(uuid.uuid4(), timezone.now(), sentinel_kind="bypass"), "explicit model")
    assert sampler.flush(15)
    assert sorted(queued) == sorted([(same.pk, str(record.request_id)), (other.pk, str(record.request_id))])
    assert ShadowCapture.objects.get(experiment=same).prompt == ""
    assert ShadowCapture.objects.get(experiment=other).prompt == "What is the capital of Peru?"
    assert ShadowCapture.objects.count() == 2
