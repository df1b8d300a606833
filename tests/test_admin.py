"""The admin shows a decision with all six instrumentation fields; catalog edits keep history."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from routing.models import CatalogChange, Decision, Route
from routing.services import decisions_insert
from tests.test_decision_log import make_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, catalog):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_a_decision_shows_in_the_admin_with_all_six_fields(admin_client):
    record = make_record()
    decisions_insert(records=[record])
    pk = Decision.objects.get(request_id=record.request_id).pk
    page = admin_client.get(f"/admin/routing/decision/{pk}/change/").content.decode()
    for heading in ("1. Request", "2. Decision", "3. Executor", "4. Tokens", "5. Latency", "6. Quality"):
        assert heading in page
    assert str(record.request_id) in page and "claude-haiku-4-5-20251001" in page
    listing = admin_client.get("/admin/routing/decision/").content.decode()
    assert str(record.request_id) in listing


def test_editing_a_route_in_the_admin_is_kept_in_history(admin_client):
    route = Route.objects.get(name="simple_qa")
    form = {
        "name": route.name, "description": route.description, "provider": route.provider, "model": route.model,
        "model_version": "claude-haiku-4-5-20260101", "max_output_tokens": route.max_output_tokens,
        "fallback": route.fallback_id, "position": route.position, "enabled": "on", "cheap_tier": "on",
    }
    response = admin_client.post(f"/admin/routing/route/{route.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    change = CatalogChange.objects.filter(source="admin").get()
    assert change.old_value["model_version"] == "claude-haiku-4-5-20251001"
    assert change.new_value["model_version"] == "claude-haiku-4-5-20260101"


def test_the_decision_log_and_history_cannot_be_edited_in_the_admin(admin_client):
    decisions_insert(records=[make_record()])
    pk = Decision.objects.get().pk
    assert admin_client.post(f"/admin/routing/decision/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert Decision.objects.count() == 1
    assert admin_client.get("/admin/routing/catalogchange/add/").status_code == 403
