"""Every malformed body gets a 4xx JSON error naming the problem — never a 500, never a row."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from routing.models import Decision

ENDPOINTS = ["/api/v1/route", "/api/v1/complete", "/api/v1/feedback", "/v1/chat/completions", "/v1/messages"]
pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, url: str, body: bytes | str, auth: dict, **extra):
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return client.post(url, data=body, content_type="application/json", **auth, **extra)


def error_text(response) -> str:
    data = response.json()
    assert "error" in data, data
    return json.dumps(data)


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize(
    "body, expect",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"", "empty"),
        (b"[]", "JSON object"),
        (b'{"message": NaN}', "finite"),
        (b'{"message": Infinity}', "finite"),
        (b'{"message": "a", "message": "b"}', "duplicate key"),
        (b'{"message": "a\\u0000b"}', "NUL"),
        (b'{"message": "\\ud800"}', "surrogate"),
        (b'{"metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "nested"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_json_400(client, auth, url, body, expect):
    response = post(client, url, body, auth)
    assert response.status_code == 400, response.content
    assert expect in error_text(response)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_body_over_the_limit_is_413(client, auth, url, settings):
    body = json.dumps({"message": "x" * (settings.GATEWAY_MAX_BODY_BYTES + 10)})
    response = post(client, url, body, auth)
    assert response.status_code == 413
    assert "exceeds" in error_text(response)


@pytest.mark.parametrize(
    "url, body, field",
    [
        ("/api/v1/route", {"message": 42}, "message"),
        ("/api/v1/route", {"message": "   "}, "message"),
        ("/api/v1/route", {"messages": []}, "messages"),
        ("/api/v1/route", {"messages": "hi"}, "messages"),
        ("/api/v1/route", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ("/api/v1/route", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ("/api/v1/route", {"messages": [{"role": "user"}]}, "messages[0].content"),
        ("/api/v1/route", {"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ("/api/v1/route", {"message": "a", "messages": [{"role": "user", "content": "b"}]}, "messages"),
        ("/api/v1/route", {}, "message"),
        ("/api/v1/route", {"message": "hi", "metadata": []}, "metadata"),
        ("/api/v1/route", {"message": "hi", "metadata": {"k": {"x": 1}}}, "metadata.k"),
        ("/api/v1/route", {"message": "hi", "max_tokens": "10"}, "max_tokens"),
        ("/api/v1/route", {"message": "hi", "colour": "red"}, "colour"),
        ("/api/v1/complete", {"message": ["hi"]}, "message"),
        ("/api/v1/feedback", {"request_id": "nope", "score": 3}, "request_id"),
        ("/api/v1/feedback", {"request_id": "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11", "score": 9}, "score"),
        ("/api/v1/feedback", {"request_id": "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11", "thumbs": "sideways"},
         "thumbs"),
        ("/api/v1/feedback", {"request_id": "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11"}, "score"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ("/v1/chat/completions", {"model": "auto", "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                  "stream": "yes"}, "stream"),
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                  "max_tokens": -5}, "max_tokens"),
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content[0].type"),
        ("/v1/messages", {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ("/v1/messages", {"model": "auto", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
         "messages[0].role"),
    ],
)
def test_wrong_types_and_empty_values_name_the_field(client, auth, url, body, field):
    response = post(client, url, json.dumps(body), auth)
    assert response.status_code == 400, response.content
    assert field in error_text(response)
    assert Decision.objects.count() == 0


def test_an_unknown_model_is_a_404_in_the_openai_error_shape(client, auth):
    response = post(client, "/v1/chat/completions",
                    json.dumps({"model": "gpt-99", "messages": [{"role": "user", "content": "hi"}]}), auth)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["param"] == "model" and "not in the catalog" in error["message"]


def test_get_is_405_with_a_json_error(client, auth):
    response = client.get("/api/v1/route", **auth)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
