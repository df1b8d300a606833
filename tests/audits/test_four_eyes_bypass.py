"""Four-eyes approval cannot be bypassed: not by a superuser author, not through the admin's change
forms (which would set a proposal's state directly), not by a bulk admin action, not by reviewing
one's own proposal in any way. Each attempt leaves the proposal and its candidate untouched."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.models import AuditEvent, Proposal
from routing.models import PolicyVersion
from tests.audits.conftest import Persona, create_proposal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def superuser(people):
    user = get_user_model().objects.create_superuser("sue-superuser", password="x")
    client = Client()
    client.force_login(user)
    return Persona(user, client)


def evaluated(persona, threshold: str = "0.900") -> dict:
    data = create_proposal(persona, {"confidence_threshold": threshold}, propose=True)
    assert data["status"] == "evaluated", data
    return data


def unchanged(data: dict) -> None:
    proposal = Proposal.objects.get(pk=data["id"])
    assert proposal.status == "evaluated" and proposal.reviewer is None
    assert PolicyVersion.objects.get(number=data["candidate_version"]).status not in ("approved", "active")


def test_a_superuser_author_cannot_approve_their_own_proposal_anywhere(superuser, small_evalset, emu):
    data = evaluated(superuser)
    pk = data["id"]
    api = superuser.post(f"/api/v1/proposals/{pk}/approve", {"comment": "mine"})
    assert api.status_code == 403 and api.json()["error"]["code"] == "self_approval"
    page = superuser.client.post(f"/governance/proposals/{pk}/approve", {"comment": "mine"})
    assert page.status_code == 403
    superuser.client.post("/admin/audits/proposal/", {"action": "approve", "_selected_action": [pk],
                                                     "index": 0, "select_across": 0})
    reject = superuser.post(f"/api/v1/proposals/{pk}/reject", {"comment": "mine"})
    assert reject.status_code == 403 and reject.json()["error"]["code"] == "self_review"
    unchanged(data)
    sources = sorted(AuditEvent.objects.filter(outcome="denied", actor_username="sue-superuser")
                     .values_list("source", flat=True))
    assert sources == ["admin", "api", "api", "page"]


def test_the_admin_change_form_cannot_set_a_proposal_state_even_for_a_superuser(people, superuser, small_evalset,
                                                                               emu):
    data = evaluated(people.engineer)
    for user in (superuser, people.reviewer):
        response = user.client.post(f"/admin/audits/proposal/{data['id']}/change/", {
            "title": data["title"], "status": "approved", "reviewer": user.user.pk, "kind": "change",
        })
        assert response.status_code == 403, user.user
        candidate = PolicyVersion.objects.get(number=data["candidate_version"])
        response = user.client.post(f"/admin/routing/policyversion/{candidate.pk}/change/", {
            "status": "active", "confidence_threshold": "0.1"})
        assert response.status_code == 403
        assert user.client.post("/admin/audits/proposal/add/", {"title": "x", "status": "approved"}).status_code == 403
    unchanged(data)
    assert str(PolicyVersion.objects.get(number=data["candidate_version"]).confidence_threshold) == "0.900"


def test_a_bulk_admin_approval_of_every_proposal_skips_the_authors_own(people, small_evalset, emu):
    from django.contrib.auth.models import Group

    people.engineer.user.groups.add(Group.objects.get(name="reviewer"))  # an engineer who also reviews
    own = evaluated(people.engineer, "0.900")
    other = evaluated(people.second_engineer, "0.850")
    people.engineer.client.post("/admin/audits/proposal/", {
        "action": "approve", "_selected_action": [own["id"]], "index": 0, "select_across": 1})
    unchanged(own)
    assert Proposal.objects.get(pk=other["id"]).status == "approved"
    assert Proposal.objects.get(pk=other["id"]).reviewer == people.engineer.user


def test_the_audit_trail_of_a_refusal_cannot_be_removed_through_the_admin(people, superuser, small_evalset, emu):
    data = evaluated(people.engineer)
    people.engineer.post(f"/api/v1/proposals/{data['id']}/approve")
    event = AuditEvent.objects.get(action="proposal.approve", outcome="denied")
    response = superuser.client.post(f"/admin/audits/auditevent/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    response = superuser.client.post("/admin/audits/auditevent/", {
        "action": "delete_selected", "_selected_action": [event.pk], "index": 0, "post": "yes"})
    assert AuditEvent.objects.filter(pk=event.pk).exists()
