import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db(transaction=True)


def _samples(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def _requests(samples, route):
    return sum(v for (name, labels), v in samples.items()
               if name == "gateway_requests_total" and ("route", route) in labels)


def test_metrics_count_requests_per_route_and_never_include_prompt_text(client, auth, runtime):
    before = _requests(_samples(client), "simple_qa")
    secret = "What is the capital of Mongolia, zebra-7731?"
    client.post("/api/v1/route", data={"message": secret}, content_type="application/json", **auth)
    samples = _samples(client)
    assert _requests(samples, "simple_qa") == before + 1
    assert any(name == "gateway_latency_seconds_bucket" for name, _ in samples)
    assert "zebra-7731" not in client.get("/metrics").content.decode()


def test_metrics_can_require_a_token(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
