"""Schemathesis fuzzes the live gateway from its own OpenAPI document (`GET /api/schema/`).

Each operation gets a bounded number of positive cases (valid by the schema) and negative cases
(invalid by the schema), sent with a valid API key to uvicorn serving the real ASGI app (providers
simulated by the emulator). Every response must be no 5xx; positive cases must also conform to the
document (documented status code, content type and JSON schema of the body), and negative cases
must be refused with a 4xx. Budget: a few seconds per operation and mode, well under a minute.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from routing.api.schema import openapi_document
from routing.models import Decision
from tests.conftest import flush_log

pytestmark = pytest.mark.django_db(transaction=True)

OPERATIONS = sorted(openapi_document()["paths"])
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 12}
CHECKS = {
    GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance, content_type_conformance,
                              response_schema_conformance],
    GenerationMode.NEGATIVE: [not_a_server_error, negative_data_rejection],
}


def test_the_served_document_is_a_valid_openapi_schema_for_schemathesis(live_gateway):
    schema = schemathesis.openapi.from_url(live_gateway.url + "/api/schema/")
    served = {op.path for op in (result.ok() for result in schema.get_all_operations())}
    assert served == set(OPERATIONS)


SMOKE = {
    "/api/v1/route": {"message": "What is the capital of Peru?"},
    "/api/v1/complete": {"messages": [{"role": "user", "content": "Write a haiku about rivers."}]},
    "/api/v1/feedback": {"request_id": "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11", "thumbs": "up"},
    "/v1/chat/completions": {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]},
    "/v1/messages": {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]},
}


def test_a_valid_request_to_each_operation_conforms_to_the_document(live_gateway, api_key):
    schema = schemathesis.openapi.from_url(live_gateway.url + "/api/schema/")
    headers = {"Authorization": f"Bearer {api_key}"}
    assert set(SMOKE) == set(OPERATIONS)
    for path, body in SMOKE.items():
        case = schema[path]["POST"].Case(body=body, media_type="application/json")
        response = case.call(base_url=live_gateway.url, headers=headers, timeout=30)
        assert response.status_code in (200, 201), (path, response.text[:300])
        case.validate_response(response, checks=CHECKS[GenerationMode.POSITIVE], headers=headers)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("path", OPERATIONS)
def test_fuzzed_requests_are_never_a_server_error(live_gateway, api_key, path, mode):
    schema = schemathesis.openapi.from_url(live_gateway.url + "/api/schema/")
    operation = schema[path]["POST"]
    session = requests.Session()
    headers = {"Authorization": f"Bearer {api_key}"}
    seen: list[int] = []

    @hsettings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
               phases=[Phase.explicit, Phase.generate],
               suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case):
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "auto"  # a random model name is a (documented) 404: route instead
        response = case.call(base_url=live_gateway.url, session=session, headers=headers, timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS[mode], headers=headers)

    fuzz()
    session.close()
    assert seen, "no case was sent"
    assert all(status < 500 for status in seen)
    flush_log()
    if mode is GenerationMode.NEGATIVE:
        # Refused input never leaves a decision row.
        assert Decision.objects.count() <= sum(1 for s in seen if s < 300)
