"""End to end: real requests through the Django client while a stricter candidate (threshold 0.99,
sample rate 1) runs in the shadow; its routing happens only when the task runs, never calls an
executor, and the report shows it disagreeing where production accepted simple_qa."""

from __future__ import annotations

import pytest

from audits.models import ShadowCapture, ShadowDecision
from routing.models import Decision
from tests.conftest import flush_log

pytestmark = pytest.mark.django_db(transaction=True)


def chat(client, auth, text):
    response = client.post("/v1/chat/completions", data={"model": "auto", "messages": [
        {"role": "user", "content": text}]}, content_type="application/json", **auth)
    assert response.status_code == 200, response.content
    return response["x-request-id"]


def test_a_stricter_candidate_disagrees_where_production_accepted_simple_qa(
        client, auth, runtime, emu, sampler, eager, people, monkeypatch):
    from audits import tasks

    engineer = people.engineer
    created = engineer.post("/api/v1/experiments/", {
        "name": "Threshold 0.99", "settings": {"confidence_threshold": "0.99"}, "sample_rate": "1"})
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    assert engineer.post(f"/api/v1/experiments/{pk}/start").json()["status"] == "running"

    # Hold the shadow tasks back: the responses must not depend on them.
    queued: list[tuple] = []
    monkeypatch.setattr(tasks.shadow_route, "delay", lambda *args: queued.append(args))
    simple = [chat(client, auth, text) for text in ("What is the capital of Peru?",
                                                     "What is the boiling point of water in Celsius?")]
    hard = chat(client, auth, "Prove that there are infinitely many primes, step by step, with a rigorous proof.")
    flush_log()
    assert sampler.flush(30)
    assert {rid for _, rid in queued} == {*simple, hard}
    assert ShadowCapture.objects.filter(experiment_id=pk).count() == 3
    assert not ShadowDecision.objects.exists()  # the requests were answered before any shadow routing
    for rid in simple:
        production = Decision.objects.get(request_id=rid)
        assert production.route == "simple_qa" and not production.escalated

    executor_calls = emu.stats()["by_kind"]["executor"]
    assert executor_calls == 3  # production answered all three
    for args in queued:
        assert tasks.shadow_route.apply(args=list(args)).get() == "decided"
    assert emu.stats()["by_kind"]["executor"] == executor_calls  # the candidate never executes

    for rid in simple:
        shadow = ShadowDecision.objects.get(request_id=rid)
        assert (shadow.production_route, shadow.candidate_route) == ("simple_qa", "complex_reasoning")
        assert shadow.candidate_escalated and shadow.candidate_sentinel_cost == 0

    report = engineer.get(f"/api/v1/experiments/{pk}/").json()["report"]
    assert report["sampled"] == 3
    assert report["confusion_matrix"]["counts"]["simple_qa"] == {"complex_reasoning": 2}
    assert report["agreement_rate"] == pytest.approx(1 / 3)
    assert float(report["cost_delta"]["sample_delta"]) > 0  # escalation costs more
    assert float(report["spend"]["experiment_spend"]) == 0 and report["spend"]["candidate_sentinel_calls"] == 0
    assert report["spend"]["within_goal"] is True
    page = engineer.get(f"/governance/experiments/{pk}/").content.decode()
    assert "simple_qa" in page and "complex_reasoning" in page

