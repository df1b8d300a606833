"""Start/pause/stop transitions with audit rows, role checks on every endpoint, the one-action
proposal, and the pages."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audits.models import (
    AuditEvent,
    ExperimentStatus,
    Proposal,
    ShadowDecision,
    ShadowExperiment,
)
from routing.models import PolicyStatus, PolicyVersion

from .conftest import decision_row, experiment

pytestmark = pytest.mark.django_db

BASE = "/api/v1/experiments/"


def create(persona, **body):
    payload = {"name": "Stricter threshold", "settings": {"confidence_threshold": "0.99"}, "sample_rate": "0.5"}
    payload.update(body)
    return persona.post(BASE, payload)


def test_an_engineer_creates_starts_pauses_resumes_and_stops_an_experiment(people):
    response = create(people.engineer)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "draft" and data["sample_rate"] == "0.5000"
    assert data["report"]["sampled"] == 0 and data["report"]["agreement_rate"] is None
    candidate = PolicyVersion.objects.get(pk=data["candidate"]["id"])
    assert candidate.status == PolicyStatus.DRAFT and candidate.confidence_threshold == Decimal("0.990")
    pk = data["id"]
    for action, status in [("start", "running"), ("pause", "paused"), ("start", "running"), ("stop", "stopped")]:
        response = people.engineer.post(f"{BASE}{pk}/{action}")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == status
    actions = list(AuditEvent.objects.filter(outcome="success", action__startswith="experiment.")
                   .order_by("id").values_list("action", flat=True))
    assert actions == ["experiment.create", "experiment.start", "experiment.pause", "experiment.start",
                       "experiment.stop"]
    assert AuditEvent.objects.filter(action="experiment.pause").first().old_value == {"status": "running"}


def test_invalid_transitions_are_409_json_and_audited(people):
    pk = create(people.engineer).json()["id"]
    response = people.engineer.post(f"{BASE}{pk}/pause")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"
    assert AuditEvent.objects.filter(action="experiment.pause", outcome="denied").count() == 1
    people.engineer.post(f"{BASE}{pk}/start")
    people.engineer.post(f"{BASE}{pk}/stop")
    assert people.engineer.post(f"{BASE}{pk}/start").status_code == 409
    assert people.engineer.post(f"{BASE}{pk}/to-proposal").status_code == 200  # stopped: allowed
    assert people.engineer.post(f"{BASE}{pk}/to-proposal").status_code == 409  # only once
    assert people.engineer.post(f"{BASE}999999/start").status_code == 404


def test_the_candidate_must_not_be_the_active_version(people):
    active = PolicyVersion.objects.get(status=PolicyStatus.ACTIVE)
    response = create(people.engineer, settings=None, candidate=active.pk)
    assert response.status_code == 400 and response.json()["error"]["field"] == "candidate"
    assert create(people.engineer, sample_rate="1.5").status_code == 400
    assert create(people.engineer, settings={"confidence_threshold": str(active.confidence_threshold)}
                  ).status_code == 400


def test_roles_engineers_manage_reviewers_and_finance_read_outsiders_are_refused(people):
    pk = create(people.engineer).json()["id"]
    for reader in (people.reviewer, people.finance):
        assert reader.get(BASE).status_code == 200
        assert reader.get(f"{BASE}{pk}/").json()["report"]["sampled"] == 0
        assert create(reader).status_code == 403
        for action in ("start", "pause", "stop", "to-proposal"):
            response = reader.post(f"{BASE}{pk}/{action}")
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    for url in (BASE, f"{BASE}{pk}/"):
        assert people.outsider.get(url).status_code == 403
    assert people.outsider.post(f"{BASE}{pk}/start").status_code == 403
    assert ShadowExperiment.objects.get(pk=pk).status == ExperimentStatus.DRAFT
    assert AuditEvent.objects.filter(action="experiment.start", outcome="denied").count() == 3


def test_a_stopped_experiment_becomes_a_proposed_proposal_with_the_report_as_evidence(people, eager, emu,
                                                                                      small_evalset):
    data = create(people.engineer).json()
    exp = ShadowExperiment.objects.get(pk=data["id"])
    row = decision_row(route="simple_qa")
    ShadowDecision.objects.create(experiment=exp, request_id=row.request_id, production_route="simple_qa",
                                  candidate_route="complex_reasoning", candidate_reason="escalated")
    people.engineer.post(f"{BASE}{exp.pk}/start")
    people.engineer.post(f"{BASE}{exp.pk}/stop")
    response = people.engineer.post(f"{BASE}{exp.pk}/to-proposal")
    assert response.status_code == 200, response.content
    proposal = Proposal.objects.get(pk=response.json()["proposal"])
    assert proposal.status in ("proposed", "evaluated")
    assert proposal.candidate.confidence_threshold == Decimal("0.990")
    assert proposal.author == people.engineer.user
    assert f"Shadow experiment #{exp.pk}" in proposal.description
    assert "Agreement: 0.0%" in proposal.description and '"confusion_matrix"' in proposal.description
    assert AuditEvent.objects.filter(action="experiment.to_proposal", outcome="success", proposal=proposal).exists()


def test_a_finished_window_finishes_the_experiment(people):
    from datetime import timedelta

    from django.utils import timezone

    from audits.shadow_services import experiments_finish_due

    exp = experiment(status="running")
    assert experiments_finish_due(now=timezone.now()) == []
    assert experiments_finish_due(now=exp.window_end + timedelta(seconds=1)) == [exp.pk]
    exp.refresh_from_db()
    assert exp.status == ExperimentStatus.FINISHED
    assert AuditEvent.objects.filter(action="experiment.finish", actor_username="system").exists()


def test_the_pages_show_the_report_and_buttons_to_engineers_only(people):
    exp = experiment(status="paused")
    row = decision_row(route="simple_qa")
    ShadowDecision.objects.create(experiment=exp, request_id=row.request_id, production_route="simple_qa",
                                  candidate_route="complex_reasoning", candidate_reason="escalated")
    page = people.engineer.get("/governance/experiments/")
    assert page.status_code == 200 and b"threshold test" in page.content
    assert b"Shadow experiments" in page.content  # the nav link
    detail = people.engineer.get(f"/governance/experiments/{exp.pk}/")
    body = detail.content.decode()
    for testid in ("agreement", "confusion", "cost-delta", "quality-delta", "spend-share", "experiment-actions"):
        assert f'data-testid="{testid}"' in body, testid
    assert "Resume" in body and "Unknown" in body
    assert 'data-testid="experiment-actions"' not in people.reviewer.get(
        f"/governance/experiments/{exp.pk}/").content.decode()
    assert people.outsider.get("/governance/experiments/").status_code == 403
    response = people.engineer.client.post(f"/governance/experiments/{exp.pk}/start")
    assert response.status_code == 302
    exp.refresh_from_db()
    assert exp.status == ExperimentStatus.RUNNING
    assert people.reviewer.client.post(f"/governance/experiments/{exp.pk}/stop").status_code == 403
