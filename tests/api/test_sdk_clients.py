"""The official openai and anthropic SDKs, pointed at the live gateway, work unchanged."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest

from routing.models import Decision
from tests.conftest import flush_log

pytestmark = pytest.mark.django_db(transaction=True)


def test_openai_sdk_gets_a_routed_answer(live_gateway, api_key):
    client = openai.OpenAI(api_key=api_key, base_url=live_gateway.url + "/v1", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the capital of Canada?"}])
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0
    assert raw.headers["x-route"] == "simple_qa"
    assert completion.model == "claude-haiku-4-5-20251001"
    flush_log()
    row = Decision.objects.get(request_id=raw.headers["x-request-id"])
    assert row.endpoint == "chat_completions" and row.route == "simple_qa"


def test_openai_sdk_streams_a_routed_answer_with_usage(live_gateway, api_key):
    client = openai.OpenAI(api_key=api_key, base_url=live_gateway.url + "/v1", max_retries=0)
    stream = client.chat.completions.create(
        model="auto", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Write a SQL query that finds duplicate emails in a users table."}])
    text, usage = "", None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
        usage = chunk.usage or usage
    assert text and usage is not None and usage.completion_tokens > 0
    flush_log()
    row = Decision.objects.get(stream=True)
    assert row.status == "ok" and row.executor_output_tokens == usage.completion_tokens


def test_a_catalog_model_name_bypasses_routing(live_gateway, api_key, emu):
    client = openai.OpenAI(api_key=api_key, base_url=live_gateway.url + "/v1", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5.4-nano", messages=[{"role": "user", "content": "Prove Fermat's little theorem."}])
    assert raw.headers["x-route"] == "direct"
    assert raw.parse().model == "gpt-5.4-nano"
    assert emu.stats()["by_kind"]["sentinel"] == 0


def test_an_unknown_model_raises_the_sdk_not_found_error(live_gateway, api_key):
    client = openai.OpenAI(api_key=api_key, base_url=live_gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])


def test_a_mid_stream_failure_reaches_the_openai_client_and_the_row_is_partial(live_gateway, api_key, emu):
    emu.set_faults({"fault": "cut", "kind": "executor", "times": -1})
    client = openai.OpenAI(api_key=api_key, base_url=live_gateway.url + "/v1", max_retries=0)
    got = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
                model="gpt-5.1", stream=True,
                messages=[{"role": "user", "content": "Explain the CAP theorem in detail with examples."}]):
            for choice in chunk.choices:
                got += choice.delta.content or ""
    flush_log()
    row = Decision.objects.get()
    assert got, "some text was delivered before the cut"
    assert row.status == "partial" and row.executor_output_tokens > 0


def test_anthropic_sdk_gets_a_routed_answer(live_gateway, api_key):
    client = anthropic.Anthropic(api_key=api_key, base_url=live_gateway.url, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=512, messages=[{"role": "user", "content": "Refactor this: for i in range(len(a)): print(a[i])"}])
    message = raw.parse()
    assert message.content[0].text
    assert message.usage.output_tokens > 0
    assert raw.headers["x-route"]
    flush_log()
    assert Decision.objects.get(request_id=raw.headers["x-request-id"]).endpoint == "messages"


def test_anthropic_sdk_streams(live_gateway, api_key):
    client = anthropic.Anthropic(api_key=api_key, base_url=live_gateway.url, max_retries=0)
    with client.messages.stream(model="auto", max_tokens=256, system="Be brief.",
                                messages=[{"role": "user", "content": "What is a haiku?"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


def test_curl_style_route_call_over_http(live_gateway, api_key):
    response = httpx2.post(live_gateway.url + "/api/v1/route", json={"message": "Summarise this contract."},
                           headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200
    assert response.json()["decision"] is not None


def test_the_openapi_schema_and_docs_page_are_served(live_gateway):
    schema = httpx2.get(live_gateway.url + "/api/schema/").json()
    assert set(schema["paths"]) == {"/api/v1/route", "/api/v1/complete", "/api/v1/feedback",
                                    "/v1/chat/completions", "/v1/messages"}
    docs = httpx2.get(live_gateway.url + "/api/docs/")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    asset = httpx2.get(live_gateway.url + "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200
