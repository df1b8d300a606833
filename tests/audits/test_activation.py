"""Activation and rollback change what the serving path does on the very next request."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audits.models import AuditEvent, Proposal
from routing.models import Decision, PolicyVersion
from tests.audits.conftest import create_proposal
from tests.conftest import flush_log

pytestmark = pytest.mark.django_db(transaction=True)

ACCEPTED = "What is the boiling point of water in Celsius?"


def route(client, auth) -> dict:
    response = client.post("/api/v1/route", data={"message": ACCEPTED}, content_type="application/json", **auth)
    assert response.status_code == 200, response.content
    return response.json()


def approved_proposal(people, threshold: str) -> dict:
    data = create_proposal(people.engineer, {"confidence_threshold": threshold}, propose=True,
                           title=f"Threshold {threshold}")
    response = people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve", {"comment": "ok"})
    assert response.status_code == 200, response.content
    return response.json()


def test_activation_changes_routing_for_the_next_request_and_rollback_restores_it(
    people, client, auth, runtime, small_evalset
):
    before = route(client, auth)
    assert before["route"] == "simple_qa" and not before["escalated"] and before["policy_version"] == 1

    proposal = approved_proposal(people, "0.990")
    assert route(client, auth)["route"] == "simple_qa"  # approved is not active
    response = people.engineer.post(f"/api/v1/proposals/{proposal['id']}/activate")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "active"

    after = route(client, auth)  # no restart, no wait
    assert after["route"] == "complex_reasoning" and after["escalated"]
    assert "below threshold 0.99" in after["reason"]
    assert after["policy_version"] == proposal["candidate_version"]
    assert dict(PolicyVersion.objects.values_list("number", "status")) == {1: "superseded", 2: "active"}

    response = people.engineer.post("/api/v1/proposals/rollback", {"reason": "too many escalations"})
    assert response.status_code == 201, response.content
    rollback = response.json()
    assert rollback["kind"] == "rollback" and rollback["status"] == "active"
    assert rollback["base_version"] == 2 and rollback["restores_version"] == 1 and rollback["candidate_version"] == 3

    restored = route(client, auth)
    assert restored["route"] == "simple_qa" and not restored["escalated"] and restored["policy_version"] == 3
    assert dict(PolicyVersion.objects.values_list("number", "status")) == {
        1: "superseded", 2: "rolled_back", 3: "active"}
    assert Proposal.objects.get(pk=proposal["id"]).status == "rolled_back"
    assert str(PolicyVersion.objects.get(number=3).confidence_threshold) == "0.750"
    event = AuditEvent.objects.get(action="policy.rollback")
    assert event.outcome == "success" and event.actor_username == "erin-engineer"
    assert event.old_value["active_version"] == 2 and event.new_value["restores_version"] == 1
    assert event.old_value["settings"]["confidence_threshold"] == "0.990"
    assert event.message == "too many escalations"

    flush_log()  # every decision row names the version that routed it
    assert sorted(Decision.objects.values_list("policy_version__number", flat=True)) == [1, 1, 2, 3]


def test_rollback_with_no_earlier_version_is_refused_and_recorded(people, catalog):
    response = people.engineer.post("/api/v1/proposals/rollback")
    assert response.status_code == 409 and "nothing to roll back" in response.json()["error"]["message"]
    assert AuditEvent.objects.get(action="policy.rollback").outcome == "denied"


def test_a_scheduled_activation_happens_when_its_time_comes(people, client, auth, runtime, small_evalset):
    from audits.tasks import activate_due_proposals

    proposal = approved_proposal(people, "0.990")
    when = timezone.now() + timedelta(seconds=1)
    response = people.engineer.post(f"/api/v1/proposals/{proposal['id']}/activate",
                                    {"activate_at": when.isoformat()})
    assert response.status_code == 200
    assert response.json()["status"] == "approved" and response.json()["activate_at"]
    assert activate_due_proposals() == []
    assert route(client, auth)["route"] == "simple_qa"
    time.sleep(1.1)
    assert activate_due_proposals() == [proposal["id"]]
    assert route(client, auth)["route"] == "complex_reasoning"
    event = AuditEvent.objects.get(action="proposal.activate", outcome="success")
    assert event.actor_username == "system" and event.source == "schedule"
    assert AuditEvent.objects.filter(action="proposal.schedule").count() == 1


def test_in_process_mode_activates_due_proposals_on_the_next_visit(people, small_evalset):
    proposal = approved_proposal(people, "0.800")
    Proposal.objects.filter(pk=proposal["id"]).update(activate_at=timezone.now() - timedelta(seconds=1))
    assert people.finance.get("/governance/proposals/").status_code == 200
    assert Proposal.objects.get(pk=proposal["id"]).status == "active"
