"""Security: secrets stay secret, pages carry their security headers, page POSTs need CSRF tokens.

- Our API keys: after traffic (answers, bad input, wrong and revoked keys, a failing provider) the
  key's secret part is in no log record (every logger at DEBUG, the SDKs' included), no response
  body or header, no text column of any table (only the hash and the prefix are stored) and no
  file under VAR_DIR (the decision spool lives there).
- Provider keys (recognisable values, providers pointed at the emulator): never in responses,
  errors, logs or /metrics.
- CSRF is enforced on every page POST and on the session-authenticated governance API.
- Pages send nosniff, a referrer policy and frame denial; HSTS under the production settings.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

from routing.services import api_key_create, api_key_revoke, application_get_or_create
from tests.conftest import flush_log

pytestmark = pytest.mark.django_db(transaction=True)

# Random provider keys made at run time (never a key-shaped literal in the repository): the
# gateway is configured with them and must never let them out.
PROVIDER_SECRETS = {
    "OPENAI_API_KEY": "sk-proj-" + secrets.token_hex(16),
    "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_hex(16),
    "GEMINI_API_KEY": "AIza" + secrets.token_hex(18),
}
SDK_LOGGERS = ("", "openai", "anthropic", "google_genai", "google", "httpx", "httpx2", "httpcore", "routing",
               "audits", "django", "django.request", "uvicorn")


@pytest.fixture
def every_log(caplog):
    for name in SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def log_text(caplog) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        parts.append(repr(record.__dict__))
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def response_text(response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    body = response.content if not response.streaming else _drain(response.streaming_content)
    return headers + "\n" + body.decode("utf-8", "replace") + "\n" + "\n".join(
        f"{k}={v.value}" for k, v in response.cookies.items())


def _drain(content) -> bytes:
    if hasattr(content, "__aiter__"):
        from asgiref.sync import async_to_sync

        async def collect() -> bytes:
            return b"".join([chunk async for chunk in content])

        return async_to_sync(collect)()
    return b"".join(content)


def database_text() -> str:
    """Every value of every column of every table, as text."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                chunks.append(" ".join(str(value) for value in row))
    return "\n".join(chunks)


def var_dir_text() -> str:
    root = Path(django_settings.VAR_DIR) if hasattr(django_settings, "VAR_DIR") else None
    spool = Path(django_settings.DECISION_SPOOL_DIR)
    chunks = []
    for base in {p for p in (root, spool) if p is not None and p.exists()}:
        for path in base.rglob("*"):
            if path.is_file() and path.suffix not in (".sqlite3", ".sqlite3-wal", ".sqlite3-shm", ".npz"):
                chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def traffic(client: Client, key: str, *, revoked: str) -> list:
    """Answers, bad input and refusals on every serving endpoint, in both auth header styles."""
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    responses = []
    for url, body in [
        ("/api/v1/route", {"message": "What is the capital of Peru?"}),
        ("/api/v1/complete", {"message": "Write a haiku about the sea."}),
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/chat/completions", {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/messages", {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}),
        ("/api/v1/route", {"message": 42}),
        ("/api/v1/feedback", {"request_id": "nope"}),
    ]:
        responses.append(client.post(url, data=json.dumps(body), content_type="application/json", **auth))
        responses.append(client.post(url, data=json.dumps(body), content_type="application/json", HTTP_X_API_KEY=key))
    for bad in (revoked, key + "x", key[:-3], "rgw_" + key.split("_", 2)[2]):
        responses.append(client.post("/api/v1/route", data='{"message": "hi"}', content_type="application/json",
                                     HTTP_AUTHORIZATION=f"Bearer {bad}"))
    responses.append(client.get("/api/v1/stats/cache", **auth))
    responses.append(client.post("/api/v1/route", data=b"{bad json", content_type="application/json", **auth))
    return responses


def test_an_api_key_never_appears_in_logs_responses_headers_the_database_or_files(client, catalog, runtime, emu,
                                                                                  every_log, settings):
    settings.GATEWAY_API_KEY_CACHE_S = 0
    app = application_get_or_create(name="secret-app")
    _, key = api_key_create(name="k", application=app)
    revoked_row, revoked = api_key_create(name="old", application=app)
    api_key_revoke(key=revoked_row)
    secrets = [key, key.split("_", 2)[2], revoked.split("_", 2)[2]]
    emu.set_faults({"fault": "500", "provider": "anthropic", "times": 1})  # one failing provider call too
    responses = traffic(client, key, revoked=revoked)
    assert any(r.status_code == 200 for r in responses) and any(r.status_code == 401 for r in responses)
    flush_log()
    texts = {"responses": "\n".join(response_text(r) for r in responses), "logs": log_text(every_log),
             "database": database_text(), "files": var_dir_text()}
    assert every_log.records, "nothing was logged: the log check would prove nothing"
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"an API key secret leaked into the {where}"
    prefix = key.split("_")[1]
    assert prefix in texts["database"]  # what *is* stored: the prefix (and the hash)


def test_provider_keys_never_appear_in_responses_errors_logs_or_metrics(client, catalog, runtime, emu, api_key,
                                                                      every_log, settings):
    for name, value in PROVIDER_SECRETS.items():
        setattr(settings, name, value)
    settings.OPENAI_BASE_URL = emu.url + "/v1"
    settings.ANTHROPIC_BASE_URL = emu.url
    settings.GEMINI_BASE_URL = emu.url
    runtime.invalidate()
    try:
        auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
        responses = traffic(client, api_key, revoked="rgw_00000000_nope")
        emu.set_faults({"fault": "500", "provider": "anthropic", "times": -1},
                       {"fault": "503", "provider": "openai", "times": -1})
        for body in ({"message": "What is the capital of Peru?"}, {"message": "Write a Python merge sort."}):
            responses.append(client.post("/api/v1/complete", data=json.dumps(body), content_type="application/json",
                                         **auth))
        responses.append(client.post("/v1/chat/completions", content_type="application/json", **auth, data=json.dumps(
            {"model": "gpt-5.1", "messages": [{"role": "user", "content": "Hi"}]})))
        emu.set_faults()
        flush_log()
        responses.append(client.get("/metrics"))
        responses.append(client.get("/healthz"))
        assert any(r.status_code == 200 for r in responses[:-2])
        assert any(r.status_code >= 500 for r in responses), "no provider failure was exercised"
        from routing.models import Decision

        # The keys were really in use: these rows are not marked simulated.
        assert Decision.objects.filter(simulated=False, status="ok").exists()
        texts = {"responses": "\n".join(response_text(r) for r in responses), "logs": log_text(every_log),
                 "database": database_text(), "files": var_dir_text()}
        for where, text in texts.items():
            for name, value in PROVIDER_SECRETS.items():
                assert value not in text, f"{name} leaked into the {where}"
                assert value[-12:] not in text, f"the end of {name} leaked into the {where}"
    finally:
        runtime.invalidate()


# ---- CSRF -------------------------------------------------------------------------------------------

@pytest.fixture
def engineer(catalog):
    user = get_user_model().objects.create_user("csrf-engineer", password="csrf-password", is_staff=True)
    user.groups.add(Group.objects.get(name="engineer"))
    return user


PAGE_POSTS = ["/governance/proposals/rollback", "/governance/proposals/1/propose", "/governance/alerts/baseline",
              "/governance/alerts/1/acknowledge", "/governance/experiments/1/start", "/admin/logout/",
              "/admin/routing/route/add/", "/admin/password_change/"]


@pytest.mark.parametrize("url", PAGE_POSTS)
def test_page_posts_without_a_csrf_token_are_refused(engineer, url):
    client = Client(enforce_csrf_checks=True)
    client.force_login(engineer)
    response = client.post(url, {"reason": "x"})
    assert response.status_code == 403 and b"CSRF" in response.content, (url, response.status_code)


def test_the_governance_api_needs_a_csrf_token_with_a_session_and_works_with_one(engineer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(engineer)
    body = json.dumps({"title": "t", "settings": {"confidence_threshold": "0.8"}})
    refused = client.post("/api/v1/proposals/", data=body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    client.get("/governance/proposals/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post("/api/v1/proposals/", data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201, accepted.content


def test_a_login_form_post_without_a_csrf_token_is_refused(engineer):
    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "csrf-engineer",
                                                                       "password": "csrf-password"})
    assert response.status_code == 403


# ---- security headers -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/admin/login/", "/governance/proposals/", "/", "/api/docs/", "/api/schema/"])
def test_pages_send_the_security_headers(engineer, url):
    client = Client()
    if not url.startswith("/admin/login"):
        client.force_login(engineer)
    response = client.get(url, secure=True)
    assert response.status_code == 200, url
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def test_the_served_gateway_sends_them_too_and_hsts_behind_a_tls_proxy(live_gateway, api_key):
    import httpx2

    for path, method, kwargs in [
        ("/admin/login/", "GET", {}),
        ("/api/v1/route", "POST", {"json": {"message": "What is 2+2?"},
                                   "headers": {"Authorization": f"Bearer {api_key}"}}),
        ("/api/v1/route", "POST", {"json": {"message": "x"}}),  # a 401
    ]:
        headers = {"X-Forwarded-Proto": "https", **kwargs.pop("headers", {})}
        response = httpx2.request(method, live_gateway.url + path, headers=headers, timeout=30, **kwargs)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "same-origin", path
        if path.startswith("/admin"):
            assert "max-age=31536000" in response.headers["strict-transport-security"]


def test_production_settings_turn_hsts_and_secure_cookies_on():
    from config.settings import security

    if django_settings.DEBUG:
        pytest.skip("DEBUG is on in this environment")
    assert security.SECURE_HSTS_SECONDS >= 31536000
    assert security.SESSION_COOKIE_HTTPONLY and security.X_FRAME_OPTIONS == "DENY"
