"""The proposal workflow over HTTP: create → propose → evaluated → approve/reject → activate,
with the four-eyes rule, the evaluation gate and role checks, and an audit row for every attempt."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group

from audits.models import AuditEvent, Proposal
from routing.models import PolicyVersion
from tests.audits.conftest import create_proposal

pytestmark = pytest.mark.django_db(transaction=True)


def denied(action: str, **filters) -> int:
    return AuditEvent.objects.filter(action=action, outcome="denied", **filters).count()


def evaluated_proposal(people, settings=None) -> dict:
    data = create_proposal(people.engineer, settings or {"confidence_threshold": "0.900"}, propose=True)
    assert data["status"] == "evaluated", data
    return data


def test_an_engineer_proposes_and_the_evaluation_compares_both_versions(people, emu, small_evalset):
    draft = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, title="Escalate more")
    assert draft["status"] == "draft" and draft["base_version"] == 1 and draft["candidate_version"] == 2
    assert draft["diff"] == [{"field": "confidence_threshold", "label": "Confidence threshold (escalate below)",
                              "before": "0.750", "after": "0.900"}]
    response = people.engineer.post(f"/api/v1/proposals/{draft['id']}/propose")
    assert response.status_code == 200, response.content
    data = response.json()
    # In-process mode the task ran on commit; both policies shared one sentinel pass.
    assert data["status"] == "evaluated"
    evaluation = data["evaluation"]
    assert evaluation["status"] == "complete"
    assert evaluation["evalset"]["n"] == 6 and evaluation["evalset"]["sentinel_calls"] == 6
    assert emu.stats()["by_kind"]["sentinel"] == 6 and emu.stats()["by_kind"]["executor"] == 0
    metrics = evaluation["metrics"]["evalset"]
    assert set(metrics) == {"current", "candidate"}
    for side in metrics.values():
        assert {"misclassification_rate", "escalation_rate", "route_share", "cost_per_million", "quality"} <= set(side)
        assert side["quality"]["score"] is None  # no judge audits yet: unknown, never invented
    assert metrics["candidate"]["escalation_rate"] >= metrics["current"]["escalation_rate"]
    quality_row = next(r for r in evaluation["table"] if r["key"] == "quality" and r["dataset"] == "evalset")
    assert quality_row["current"] == "unknown" and quality_row["delta"] == "unknown"
    assert PolicyVersion.objects.get(number=2).status == "evaluated"
    actions = list(AuditEvent.objects.filter(proposal_id=draft["id"]).order_by("id").values_list("action", "outcome"))
    assert actions == [("proposal.create", "success"), ("proposal.propose", "success"),
                       ("proposal.evaluated", "success")]


def test_the_evaluation_uses_the_project_regression_set_by_default(people, emu):
    data = create_proposal(people.engineer, {"confidence_threshold": "0.990"}, propose=True)
    assert data["evaluation"]["evalset"]["path"] == "data/sentinel/regression.jsonl"
    assert data["evaluation"]["evalset"]["n"] == data["evaluation"]["evalset"]["sentinel_calls"] > 300
    assert data["evaluation"]["metrics"]["evalset"]["candidate"]["escalation_rate"] == 1.0


def test_the_author_cannot_approve_their_own_proposal_through_the_api(people, small_evalset):
    people.engineer.user.groups.add(Group.objects.get(name="reviewer"))  # an engineer who also reviews
    data = evaluated_proposal(people)
    response = people.engineer.post(f"/api/v1/proposals/{data['id']}/approve", {"comment": "LGTM"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "self_approval"
    assert "four-eyes" in response.json()["error"]["message"]
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"
    event = AuditEvent.objects.get(action="proposal.approve", outcome="denied")
    assert event.actor_username == "erin-engineer" and event.source == "api" and event.proposal_id == data["id"]


def test_the_author_cannot_approve_their_own_proposal_through_the_page(people, small_evalset):
    people.engineer.user.groups.add(Group.objects.get(name="reviewer"))
    data = evaluated_proposal(people)
    page = people.engineer.get(f"/governance/proposals/{data['id']}/")
    assert page.status_code == 200 and b'data-testid="approve"' not in page.content  # no button for the author
    response = people.engineer.client.post(f"/governance/proposals/{data['id']}/approve", {"comment": "mine"})
    assert response.status_code == 403
    assert b"four-eyes" in response.content
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"
    assert denied("proposal.approve", source="page") == 1


def test_the_author_cannot_approve_their_own_proposal_through_the_admin(people, small_evalset):
    people.engineer.user.groups.add(Group.objects.get(name="reviewer"))
    data = evaluated_proposal(people)
    response = people.engineer.client.post("/admin/audits/proposal/", {
        "action": "approve", "_selected_action": [data["id"]], "index": 0, "select_across": 0,
    }, follow=True)
    assert response.status_code == 200
    assert b"four-eyes" in response.content
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"
    assert denied("proposal.approve", source="admin") == 1
    # ...while another reviewer can approve there, through the same service.
    people.reviewer.client.post("/admin/audits/proposal/", {
        "action": "approve", "_selected_action": [data["id"]], "index": 0, "select_across": 0,
    })
    assert Proposal.objects.get(pk=data["id"]).status == "approved"
    assert AuditEvent.objects.get(action="proposal.approve", outcome="success").source == "admin"


def test_approval_is_refused_until_the_evaluation_is_complete(people, small_evalset, monkeypatch):
    from audits import services
    from audits.tasks import evaluate_proposal

    monkeypatch.setattr(services, "_enqueue_evaluation", lambda proposal_id: None)  # the worker is busy
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, propose=True)
    assert data["status"] == "proposed" and data["evaluation_status"] == "pending"
    response = people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_evaluated"
    assert "evaluation is not complete" in response.json()["error"]["message"]
    assert denied("proposal.approve") == 1

    assert evaluate_proposal(data["id"]) == "evaluated"
    assert evaluate_proposal(data["id"]).startswith("skipped")  # redelivery is harmless
    response = people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve", {"comment": "numbers look right"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "approved" and body["reviewer"] == "rita-reviewer"
    assert PolicyVersion.objects.get(number=data["candidate_version"]).status == "approved"


def test_a_rejection_needs_a_comment(people, small_evalset):
    data = evaluated_proposal(people)
    url = f"/api/v1/proposals/{data['id']}/reject"
    response = people.reviewer.post(url, {"comment": "  "})
    assert response.status_code == 400 and response.json()["error"]["field"] == "comment"
    response = people.reviewer.post(url, {"comment": "Escalates too much simple traffic."})
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert response.json()["review_comment"] == "Escalates too much simple traffic."
    assert PolicyVersion.objects.get(number=data["candidate_version"]).status == "rejected"
    assert people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve").status_code == 409
    assert [e.outcome for e in AuditEvent.objects.filter(action="proposal.reject").order_by("id")] == \
        ["denied", "success"]


def test_finance_can_read_but_cannot_write(people, small_evalset):
    data = evaluated_proposal(people)
    finance = people.finance
    assert finance.get("/api/v1/proposals/").status_code == 200
    assert finance.get(f"/api/v1/proposals/{data['id']}/").status_code == 200
    assert finance.get("/api/v1/audit-events/").status_code == 200
    assert finance.get(f"/governance/proposals/{data['id']}/").status_code == 200
    attempts = [
        ("/api/v1/proposals/", {"title": "cheaper", "settings": {"confidence_threshold": "0.5"}}, "proposal.create"),
        (f"/api/v1/proposals/{data['id']}/approve", {}, "proposal.approve"),
        (f"/api/v1/proposals/{data['id']}/reject", {"comment": "too expensive"}, "proposal.reject"),
        (f"/api/v1/proposals/{data['id']}/activate", {}, "proposal.activate"),
        ("/api/v1/proposals/rollback", {}, "policy.rollback"),
    ]
    for url, body, action in attempts:
        response = finance.post(url, body)
        assert response.status_code == 403, (url, response.content)
        assert response.json()["error"]["code"] == "forbidden"
        assert denied(action, actor_username="fiona-finance") == 1, action
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"
    assert Proposal.objects.count() == 1


def test_outsiders_get_nothing(people, small_evalset, client):
    data = evaluated_proposal(people)
    outsider = people.outsider
    for url in ("/api/v1/proposals/", f"/api/v1/proposals/{data['id']}/", "/api/v1/audit-events/"):
        response = outsider.get(url)
        assert response.status_code == 403 and "governance role" in response.json()["error"]["message"]
        anonymous = client.get(url)
        assert anonymous.status_code in (401, 403) and anonymous.json()["error"]["code"] == "not_authenticated"
    for url in ("/governance/proposals/", f"/governance/proposals/{data['id']}/", "/governance/audit/"):
        assert outsider.get(url).status_code == 403
        assert client.get(url).status_code == 302  # to the login page
    response = outsider.post(f"/api/v1/proposals/{data['id']}/approve")
    assert response.status_code == 403
    assert outsider.client.post(f"/governance/proposals/{data['id']}/approve").status_code == 403
    assert denied("proposal.approve", actor_username="oscar-outsider") == 2
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"


def test_a_proposed_candidate_cannot_be_edited_by_any_route(people, small_evalset):
    data = evaluated_proposal(people)
    url = f"/api/v1/proposals/{data['id']}/"
    for method in ("put", "patch", "delete"):
        response = getattr(people.engineer.client, method)(url, data=json.dumps({"title": "x"}),
                                                            content_type="application/json")
        assert response.status_code == 405, method
    policy = PolicyVersion.objects.get(number=data["candidate_version"])
    admin_change = people.engineer.client.post(f"/admin/routing/policyversion/{policy.pk}/change/",
                                               {"confidence_threshold": "0.1"})
    assert admin_change.status_code in (302, 403)
    policy.refresh_from_db()
    assert str(policy.confidence_threshold) == "0.900"
    assert people.engineer.post(f"/api/v1/proposals/{data['id']}/propose").status_code == 409


def test_bad_input_is_a_4xx_json_error_never_a_500(people, catalog):
    engineer = people.engineer
    cases = [
        ({"title": "t", "settings": {"confidence_threshold": "abc"}}, "confidence_threshold"),
        ({"title": "t", "settings": {"confidence_threshold": 2}}, "confidence_threshold"),
        ({"title": "t", "settings": {"fallback_route": "nowhere"}}, "fallback_route"),
        ({"title": "t", "settings": {"number": 7}}, "settings"),
        ({"title": "t", "settings": {"sentinel_prompt_version": "v9"}}, "sentinel_prompt_version"),
        ({"title": "t", "settings": {"confidence_threshold": "0.750"}}, "settings"),  # changes nothing
        ({"title": "", "settings": {"confidence_threshold": "0.8"}}, "title"),
        ({"title": "t", "settings": "high"}, "settings"),
        ({"title": "t", "settings": {"speculative": "yes"}}, "speculative"),
    ]
    for body, field in cases:
        response = engineer.post("/api/v1/proposals/", body)
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"]["field"] == field, (body, response.json())
    raw = engineer.client.post("/api/v1/proposals/", data="{not json", content_type="application/json")
    assert raw.status_code == 400 and "error" in raw.json()
    assert engineer.post("/api/v1/proposals/[1]", {}).status_code == 404
    assert engineer.post("/api/v1/proposals/999/approve").status_code == 403  # engineers never approve
    missing = people.reviewer.post("/api/v1/proposals/999/approve")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert engineer.get("/api/v1/proposals/999/").status_code == 404
    assert engineer.get("/api/v1/audit-events/?limit=abc").status_code == 400
    assert engineer.post("/api/v1/proposals/", ["a list"]).status_code == 400
    assert Proposal.objects.count() == 0
    # Every refused create left an audit row (input the serializer refused never reached the service).
    assert denied("proposal.create") == 7


def test_a_stale_approval_cannot_be_activated_over_a_newer_policy(people, small_evalset):
    first = evaluated_proposal(people, {"confidence_threshold": "0.800"})
    second = evaluated_proposal(people, {"confidence_threshold": "0.850"})
    for data in (first, second):
        assert people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve").status_code == 200
    assert people.engineer.post(f"/api/v1/proposals/{first['id']}/activate").status_code == 200
    response = people.engineer.post(f"/api/v1/proposals/{second['id']}/activate")
    assert response.status_code == 409 and response.json()["error"]["code"] == "stale_base"
    assert PolicyVersion.objects.get(status="active").number == first["candidate_version"]
