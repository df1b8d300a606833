"""API keys: required, hashed at rest, revocable; the raw key is shown once."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import call_command

from routing.models import ApiKey
from routing.services import api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)
ENDPOINTS = ["/api/v1/route", "/api/v1/complete", "/api/v1/feedback", "/v1/chat/completions", "/v1/messages"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_missing_key_is_401(client, catalog, url):
    response = client.post(url, data={"message": "hi"}, content_type="application/json")
    assert response.status_code == 401
    assert "error" in response.json()


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_wrong_key_is_401(client, catalog, url):
    response = client.post(url, data={"message": "hi"}, content_type="application/json",
                           HTTP_AUTHORIZATION="Bearer rgw_deadbeef_not-a-real-key")
    assert response.status_code == 401


def test_the_key_is_stored_only_as_a_hash_and_prefix(api_key):
    row = ApiKey.objects.get()
    assert row.key_hash == hashlib.sha256(api_key.encode()).hexdigest()
    assert api_key.startswith(f"rgw_{row.prefix}_")
    stored = " ".join(str(v) for v in ApiKey.objects.values_list().get())
    assert api_key not in stored


def test_a_revoked_key_is_refused(client, api_key, runtime, settings):
    settings.GATEWAY_API_KEY_CACHE_S = 0
    ok = client.post("/api/v1/feedback", data={"request_id": "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11", "score": 4},
                     content_type="application/json", HTTP_X_API_KEY=api_key)
    assert ok.status_code == 201
    api_key_revoke(key=ApiKey.objects.get())
    refused = client.post("/api/v1/feedback", data={"request_id": "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11",
                                                    "score": 4},
                          content_type="application/json", HTTP_X_API_KEY=api_key)
    assert refused.status_code == 401


def test_create_api_key_prints_the_key_alone_on_its_last_line(catalog, capsys):
    call_command("create_api_key", "--name", "billing-service")
    out = capsys.readouterr().out.strip().splitlines()
    raw = out[-1]
    assert raw.startswith("rgw_") and " " not in raw
    assert ApiKey.objects.get(name="billing-service").key_hash == hashlib.sha256(raw.encode()).hexdigest()
