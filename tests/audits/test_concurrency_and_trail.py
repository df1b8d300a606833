"""Concurrent approvals make exactly one transition; the audit trail cannot be edited."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.test import Client

from audits.models import AppendOnlyError, AuditEvent, Proposal
from tests.audits.conftest import create_proposal

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_approvals_produce_exactly_one_transition(people, small_evalset):
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, propose=True)
    reviewers = [people.reviewer, people.second_reviewer] * 3  # six approvals racing
    barrier = threading.Barrier(len(reviewers))
    statuses: list[int] = []
    lock = threading.Lock()

    def approve(persona) -> None:
        client = Client()
        client.force_login(persona.user)
        try:
            barrier.wait(timeout=10)
            response = client.post(f"/api/v1/proposals/{data['id']}/approve", data={"comment": "race"},
                                   content_type="application/json")
            with lock:
                statuses.append(response.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(p,)) for p in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [200] + [409] * 5, statuses
    assert Proposal.objects.get(pk=data["id"]).status == "approved"
    assert AuditEvent.objects.filter(action="proposal.approve", outcome="success").count() == 1
    assert AuditEvent.objects.filter(action="proposal.approve", outcome="denied").count() == 5


def test_every_attempt_leaves_an_audit_row_including_the_refused_ones(people, small_evalset):
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"})
    pid = data["id"]
    attempts = [
        (people.reviewer, f"/api/v1/proposals/{pid}/approve", {}, 409),       # still a draft
        (people.finance, f"/api/v1/proposals/{pid}/propose", {}, 403),        # finance writes
        (people.engineer, f"/api/v1/proposals/{pid}/propose", {}, 200),
        (people.engineer, f"/api/v1/proposals/{pid}/approve", {}, 403),       # engineer approving
        (people.reviewer, f"/api/v1/proposals/{pid}/reject", {}, 400),        # no comment
        (people.second_engineer, f"/api/v1/proposals/{pid}/activate", {}, 409),  # not approved
        (people.reviewer, f"/api/v1/proposals/{pid}/approve", {}, 200),
        (people.second_reviewer, f"/api/v1/proposals/{pid}/approve", {}, 409),  # already approved
        (people.second_engineer, f"/api/v1/proposals/{pid}/activate", {}, 200),
    ]
    for persona, url, body, expected in attempts:
        assert persona.post(url, body).status_code == expected, url
    rows = list(AuditEvent.objects.filter(proposal_id=pid).order_by("id")
                .values_list("actor_username", "action", "outcome"))
    assert rows == [
        ("erin-engineer", "proposal.create", "success"),
        ("rita-reviewer", "proposal.approve", "denied"),
        ("fiona-finance", "proposal.propose", "denied"),
        ("erin-engineer", "proposal.propose", "success"),
        ("system", "proposal.evaluated", "success"),
        ("erin-engineer", "proposal.approve", "denied"),
        ("rita-reviewer", "proposal.reject", "denied"),
        ("ed-engineer", "proposal.activate", "denied"),
        ("rita-reviewer", "proposal.approve", "success"),
        ("rob-reviewer", "proposal.approve", "denied"),
        ("ed-engineer", "proposal.activate", "success"),
    ]
    trail = people.finance.get(f"/api/v1/audit-events/?proposal={pid}").json()["results"]
    assert len(trail) == len(rows) and trail[0]["action"] == "proposal.activate"
    assert trail[0]["old_value"]["active_version"] == 1 and trail[0]["new_value"]["active_version"] == 2
    page = people.finance.get("/governance/audit/?outcome=denied")
    assert page.status_code == 200 and page.content.count(b'class="badge denied"') == 6


def test_the_audit_trail_cannot_be_edited_or_deleted(people, small_evalset):
    create_proposal(people.engineer, {"confidence_threshold": "0.900"})
    event = AuditEvent.objects.get()
    original = event.message
    # API: there is no write endpoint.
    for method in ("post", "put", "patch", "delete"):
        response = getattr(people.engineer.client, method)("/api/v1/audit-events/", data="{}",
                                                          content_type="application/json")
        assert response.status_code == 405, method
    # Admin: read-only, no delete.
    admin = Client()
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", password="x")
    admin.force_login(root)
    assert admin.post(f"/admin/audits/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin.post(f"/admin/audits/auditevent/{event.pk}/change/", {"message": "x"}).status_code == 403
    # ORM: refused.
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(message="rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    # Database: refused even in raw SQL.
    with pytest.raises(DatabaseError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE audits_auditevent SET message = 'rewritten'")
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM audits_auditevent")
    assert AuditEvent.objects.get().message == original
