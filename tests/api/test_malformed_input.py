"""Malformed bodies on every JSON POST endpoint — the serving API and the governance API — are a 4xx
JSON error naming the problem: never a 500, never a row written. Oversized bodies are refused by the
ASGI guard before they are read whole, with or without a content-length (chunked).

tests/api/test_bad_input.py covers the serving endpoints' field-by-field validation; this file
covers the byte- and JSON-level attacks on all of them, through Django's test client and, for the
body guard, through uvicorn on a real socket.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from audits.models import AuditEvent, AuditSample, Proposal, ShadowCapture, ShadowExperiment
from routing.models import Decision, Feedback, PolicyVersion
from tests.audits.conftest import people  # noqa: F401 - re-exported fixture
from tests.conftest import flush_log

pytestmark = pytest.mark.django_db(transaction=True)

SERVING = ["/api/v1/route", "/api/v1/complete", "/api/v1/feedback", "/v1/chat/completions", "/v1/messages"]
# Governance endpoints whose view reads a JSON body (the others take no body).
GOVERNANCE = ["/api/v1/proposals/", "/api/v1/proposals/rollback", "/api/v1/proposals/1/approve",
              "/api/v1/proposals/1/reject", "/api/v1/proposals/1/activate", "/api/v1/experiments/"]
ALL = SERVING + GOVERNANCE

DEEP = 100_000
CASES = [
    # (id, body, words one of which the error must contain)
    ("invalid-utf8", b'{"message": "\xff\xfe"}', ("UTF-8",)),
    ("overlong-utf8", b'{"message": "\xc0\xaf"}', ("UTF-8",)),
    ("truncated", b'{"message": "hi"', ("not valid JSON",)),
    ("nan", b'{"message": NaN}', ("finite",)),
    ("infinity", b'{"message": Infinity}', ("finite",)),
    ("minus-infinity", b'{"message": -Infinity}', ("finite",)),
    ("overflowing-float", b'{"metadata": {"k": 1e999}, "title": 1e999, "comment": 1e999}', ("finite",)),
    ("huge-integer", b'{"max_tokens": 1' + b"0" * 5000 + b"}", ("not valid JSON", "digits")),
    ("duplicate-key", b'{"message": "a", "message": "b"}', ("duplicate key",)),
    ("nested-duplicate-key", b'{"metadata": {"k": "a", "k": "b"}}', ("duplicate key",)),
    ("nul-in-value", b'{"message": "a\\u0000b"}', ("NUL",)),
    ("nul-in-key", b'{"mess\\u0000age": "a"}', ("NUL",)),
    ("lone-surrogate", b'{"message": "\\ud800"}', ("surrogate",)),
    ("lone-low-surrogate-in-key", b'{"\\udfff": "x"}', ("surrogate",)),
    ("nested-40", b'{"metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", ("nested",)),
    ("nested-100000", b'{"metadata": ' + b"[" * DEEP + b"]" * DEEP + b"}", ("nested",)),
    ("top-level-array", b"[1, 2]", ("JSON object", "object")),
    ("top-level-string", b'"hello"', ("JSON object", "object")),
]


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count()
            for model in (Decision, Feedback, Proposal, PolicyVersion, ShadowExperiment, AuditEvent, AuditSample,
                          ShadowCapture)}


@pytest.fixture
def poster(client, auth, people, runtime):  # noqa: F811 - the re-exported fixture
    """POST raw bytes: serving endpoints with the API key, governance endpoints as an engineer."""

    def post(url: str, body: bytes):
        if url in SERVING:
            return client.post(url, data=body, content_type="application/json", **auth)
        return people.engineer.client.post(url, data=body, content_type="application/json")

    return post


def test_the_governance_api_parses_json_with_the_strict_parser():
    """DRF's own JSON parser accepts duplicate keys and 1e999 and crashes (500) on deep nesting."""
    from rest_framework.settings import api_settings

    from routing.api.parsing import StrictJSONParser

    assert api_settings.DEFAULT_PARSER_CLASSES[0] is StrictJSONParser, (
        "REST_FRAMEWORK['DEFAULT_PARSER_CLASSES'] must start with routing.api.parsing.StrictJSONParser")


@pytest.mark.parametrize("url", ALL)
@pytest.mark.parametrize("case_id, body, words", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_body_is_a_json_400_naming_the_problem_and_writes_nothing(poster, url, case_id, body, words):
    before = counts()
    response = poster(url, body)
    assert response.status_code == 400, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    text = json.dumps(response.json())
    assert "error" in response.json() and any(w in text for w in words), text
    flush_log()
    assert counts() == before


@pytest.mark.parametrize("url", SERVING + ["/api/v1/proposals/"])
@hsettings(max_examples=25, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                 lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                    max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
))
def test_arbitrary_bytes_and_json_are_never_a_server_error(poster, url, body):
    response = poster(url, body)
    assert response.status_code < 500, (body, response.status_code, response.content[:300])
    assert "error" in response.json() or response.status_code < 300


# ---- the ASGI body guard, over a real socket ---------------------------------------------------

def raw_http(base_url: str, request: bytes, *, send_after: list[bytes] = (),
             timeout: float = 10.0) -> tuple[int, bytes]:
    """Send `request` (headers and maybe a body), then `send_after` pieces while the server still
    reads; return the status and the (de-chunked) body of the response. The request says
    `Connection: close`, so the response ends when the server closes."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        for piece in send_after:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: it stopped reading, as it should
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head.split(b" ", 2)[1]), body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2:]
    return out


def chunked(pieces: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


def headers(path: str, api_key: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("url", SERVING + ["/api/v1/proposals/"])
def test_a_chunked_body_over_the_limit_is_413_and_no_view_runs(live_gateway, api_key, url, settings):
    """The first chunk is a complete, valid request; the padding after it crosses the limit. The
    view must not run on the part read so far (no decision row, no emulator call)."""
    limit = settings.GATEWAY_MAX_BODY_BYTES
    valid = json.dumps({"message": "What is the capital of Peru?"}).encode()
    padding = [b" " * 65536] * (limit // 65536 + 2)
    before = counts()
    status, body = raw_http(live_gateway.url, headers(url, api_key, "Transfer-Encoding: chunked\r\n"),
                            send_after=chunked([valid, *padding]))
    assert status == 413, body[:300]
    assert json.loads(body)["error"]["code"] == "body_too_large"
    flush_log()
    assert counts() == before


@pytest.mark.parametrize("url", ALL)
def test_a_declared_length_over_the_limit_is_413_before_any_body_byte_is_sent(live_gateway, api_key, url, settings):
    status, body = raw_http(live_gateway.url, headers(url, api_key,
                                                      f"Content-Length: {settings.GATEWAY_MAX_BODY_BYTES * 50}\r\n"))
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert "exceeds" in json.loads(body)["error"]["message"]


def test_a_malformed_content_length_is_refused(live_gateway, api_key):
    status, _ = raw_http(live_gateway.url, headers("/api/v1/route", api_key, "Content-Length: -5\r\n"))
    assert status in (400, 413)


def test_a_chunked_body_under_the_limit_is_served(live_gateway, api_key, emu):
    valid = json.dumps({"message": "What is the capital of Peru?"}).encode()
    status, body = raw_http(live_gateway.url, headers("/api/v1/route", api_key, "Transfer-Encoding: chunked\r\n"),
                            send_after=chunked([valid[:10], valid[10:]]))
    assert status == 200, body[:300]
    flush_log()
    assert Decision.objects.filter(request_id=json.loads(body)["request_id"]).exists()
