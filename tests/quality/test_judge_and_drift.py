"""Judge audits end to end (emulator judge), idempotence, misroute flags, drift rules, version
alerts, webhook retries, and the API's role checks."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from audits.drift import compare
from audits.judge import misroute_flag
from audits.models import DriftAlert, DriftKind, JudgeAudit, Misroute
from routing.models import Decision, Route
from tests.conftest import flush_log

from .conftest import judge_everything

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, url, body, auth):
    return client.post(url, data=body, content_type="application/json", **auth)


def chat(client, auth, text):
    """An OpenAI-compatible request (its view records through routing/api/common.py's hook)."""
    response = client.post("/v1/chat/completions", data={"model": "auto", "messages": [
        {"role": "user", "content": text}]}, content_type="application/json", **auth)
    assert response.status_code == 200, response.content
    return response["x-request-id"]


def test_misroute_flags():
    assert misroute_flag(score=2, question_complexity="complex", cheap_tier=True, frontier=False) == Misroute.UNDER
    assert misroute_flag(score=3, question_complexity="complex", cheap_tier=True, frontier=False) == Misroute.NONE
    assert misroute_flag(score=5, question_complexity="simple", cheap_tier=False, frontier=True) == Misroute.OVER
    assert misroute_flag(score=5, question_complexity="complex", cheap_tier=False, frontier=True) == Misroute.NONE
    assert misroute_flag(score=2, question_complexity="simple", cheap_tier=False, frontier=True) == Misroute.NONE


def test_a_real_request_at_rate_1_is_judged_by_the_emulator_and_scored_on_the_decision(
        client, auth, runtime, sampler, eager):
    judge_everything("1")
    request_id = chat(client, auth, "What is the capital of Peru?")
    flush_log()
    assert sampler.flush(30)
    audit = JudgeAudit.objects.select_related("sample").get(request_id=request_id)
    assert audit.status == "scored" and 1 <= audit.score <= 5 and audit.rationale
    assert audit.sample.prompt == "What is the capital of Peru?" and audit.sample.answer
    assert audit.sample.weight == pytest.approx(1.0)
    assert audit.applied
    assert Decision.objects.get(request_id=request_id).judge_score == audit.score


def test_a_request_at_rate_0_is_not_captured(client, auth, runtime, sampler, eager):
    judge_everything("0")
    chat(client, auth, "What is the capital of Peru?")
    flush_log()
    sampler.flush(30)
    assert not JudgeAudit.objects.exists()


def test_the_judge_task_twice_makes_one_audit_and_one_judge_call(client, auth, runtime, sampler, eager):
    from audits.tasks import judge_audit

    judge_everything("1")
    request_id = chat(client, auth, "Define entropy in one sentence.")
    flush_log()
    sampler.flush(30)
    assert JudgeAudit.objects.get(request_id=request_id).status == "scored"
    assert judge_audit.delay(request_id).get() == "scored"  # again: nothing new
    assert JudgeAudit.objects.filter(request_id=request_id).count() == 1
    assert JudgeAudit.objects.get(request_id=request_id).attempts == 1


def test_a_cheap_route_flagged_under_routed_by_a_low_score(catalog, eager):
    from audits.judge import Verdict, audit_record_score
    from audits.sampling import sample_store
    from routing.engine.dispatch import DecisionRecord  # noqa: F401 - the record shape

    cheap = Route.objects.filter(cheap_tier=True).first()

    class Rec:
        request_id = "6c1a4c2e-3f3c-4a57-8f63-2d1b8c1f0a11"
        route, executor_model, confidence = cheap.name, cheap.model, 0.9

    sample_store(record=Rec, prompt="q", answer="a", probability=0.5)
    audit = audit_record_score(request_id=Rec.request_id, verdict=Verdict(2, "shallow", "complex", "v"))
    assert audit.misroute == Misroute.UNDER
    assert audit.sample.weight == 2.0


def test_the_five_point_rule():
    before = {"simple_qa": {"share": 0.50}, "code_generation": {"share": 0.50}}
    assert compare({"simple_qa": {"share": 0.54}, "code_generation": {"share": 0.46}}, before, against="x") == []
    moved = compare({"simple_qa": {"share": 0.56}, "code_generation": {"share": 0.44}}, before, against="x")
    assert sorted(f.key for f in moved) == ["code_generation", "simple_qa"]
    assert all(f.kind == DriftKind.ROUTE_SHARE for f in moved)


def test_confidence_and_judge_drops():
    before = {"r": {"share": 1.0, "mean_confidence": 0.9, "mean_judge": 4.5}}
    assert compare({"r": {"share": 1.0, "mean_confidence": 0.85, "mean_judge": 4.1}}, before, against="x") == []
    kinds = {f.kind for f in compare({"r": {"share": 1.0, "mean_confidence": 0.7, "mean_judge": 3.9}},
                                     before, against="x")}
    assert kinds == {DriftKind.CONFIDENCE, DriftKind.JUDGE_SCORE}


def test_the_drift_task_compares_windows_and_the_pinned_baseline(catalog, eager):
    from audits.drift import baseline_pin
    from audits.tasks import check_drift

    now = timezone.now()

    def decisions(route, n, days_ago):
        Decision.objects.bulk_create([
            Decision(route=route, policy_reason="x", endpoint="complete", sentinel_kind="llm", confidence=0.9,
                     created_at=now - timedelta(days=days_ago)) for _ in range(n)])

    decisions("simple_qa", 50, 10)
    decisions("code_generation", 50, 10)
    baseline_pin(actor="erin", now=now - timedelta(days=7))
    decisions("simple_qa", 80, 1)
    decisions("code_generation", 20, 1)
    ids = check_drift.delay().get()
    alerts = DriftAlert.objects.filter(pk__in=ids)
    assert {(a.key, a.details["against"]) for a in alerts} == {
        ("simple_qa", "previous window"), ("code_generation", "previous window"),
        ("simple_qa", "pinned baseline"), ("code_generation", "pinned baseline")}


def test_a_provider_reporting_another_model_version_raises_one_alert(client, auth, runtime, emu, eager):
    from audits.drift import model_version_check

    judge_everything("0")
    route = Route.objects.get(name="simple_qa")
    emu.configure(model_versions={route.model_version: route.model_version + "-hotfix"})
    ids = []
    for _ in range(2):
        ids.append(post(client, "/api/v1/complete", {"message": "What is the capital of Peru?"}, auth)
                   .json()["request_id"])
    flush_log()
    assert Decision.objects.get(request_id=ids[0]).executor_model_version == route.model_version + "-hotfix"
    model_version_check(request_ids=ids)
    model_version_check(request_ids=ids)
    alert = DriftAlert.objects.get(kind=DriftKind.MODEL_VERSION)
    assert alert.key == f"simple_qa|{route.model_version}-hotfix"


class FlakyHook(http.server.BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FlakyHook.calls.append(body)
        self.send_response(500 if len(FlakyHook.calls) <= 2 else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_webhook_is_retried_until_it_accepts(catalog, settings, eager):
    from audits.tasks import send_alert_webhook

    FlakyHook.calls = []
    server = http.server.HTTPServer(("127.0.0.1", 0), FlakyHook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
        settings.ALERT_WEBHOOK_BACKOFF_S = 0
        alert = DriftAlert.objects.create(kind=DriftKind.ROUTE_SHARE, key="simple_qa", message="moved")
        # Eager mode re-applies a retried task at once; it must not re-raise the Retry meanwhile.
        from config.celery import app

        before, app.conf.task_eager_propagates = app.conf.task_eager_propagates, False
        try:
            send_alert_webhook.delay(alert.pk)
        finally:
            app.conf.task_eager_propagates = before
    finally:
        server.shutdown()
    assert len(FlakyHook.calls) == 3
    assert FlakyHook.calls[-1]["alert"]["key"] == "simple_qa"
    alert.refresh_from_db()
    assert alert.webhook_status == "sent"


def test_roles_on_the_quality_api_and_pages(people):
    alert = DriftAlert.objects.create(kind=DriftKind.ROUTE_SHARE, key="simple_qa", message="moved")
    for persona in (people.engineer, people.reviewer, people.finance):
        assert persona.get("/api/v1/quality/report/").status_code == 200
        assert persona.get("/api/v1/quality/audits/").status_code == 200
        assert persona.get("/api/v1/drift/alerts/").status_code == 200
        assert persona.get("/governance/quality/").status_code == 200
        assert persona.get("/governance/alerts/").status_code == 200
    assert people.outsider.get("/api/v1/drift/alerts/").status_code == 403
    assert people.outsider.get("/governance/quality/").status_code == 403
    url = f"/api/v1/drift/alerts/{alert.pk}/acknowledge"
    for persona in (people.reviewer, people.finance, people.outsider):
        response = persona.post(url)
        assert response.status_code == 403 and response.json()["error"]["code"]
    ok = people.engineer.post(url)
    assert ok.status_code == 200 and ok.json()["acknowledged_by"] == "erin-engineer"
    assert people.engineer.post("/api/v1/drift/alerts/999999/acknowledge").status_code == 404
    assert people.engineer.get("/api/v1/drift/baseline/").status_code == 404
    assert people.engineer.post("/api/v1/drift/baseline/").status_code == 201
    assert people.reviewer.post("/api/v1/drift/baseline/").status_code == 403
    assert people.engineer.get("/api/v1/quality/audits/?misroute=bogus").status_code == 400
