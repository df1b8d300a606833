"""Replayed traffic, projected cost and quality, the quality gate on cheaper proposals, and the pages."""

from __future__ import annotations

import pytest
from django.test import Client

from audits.models import Proposal
from routing.models import Decision
from tests.audits.conftest import create_proposal

pytestmark = pytest.mark.django_db(transaction=True)


def add_traffic(n: int, *, decided: str, confidence: float, route: str, judge: int | None = None) -> None:
    for _ in range(n):
        Decision.objects.create(
            endpoint="complete", sentinel_kind="llm", route=route, policy_reason="logged",
            sentinel_decision={"route": decided, "confidence": confidence, "reasoning_depth_needed": "none",
                               "tools_required": [], "estimated_output_tokens": 100,
                               "route_override_attempted": False},
            executor_input_tokens=1000, executor_output_tokens=200,
            sentinel_input_tokens=500, sentinel_output_tokens=30, judge_score=judge,
        )


def test_logged_traffic_is_replayed_and_priced_from_observed_tokens(people, small_evalset, emu):
    add_traffic(10, decided="simple_qa", confidence=0.8, route="simple_qa")
    data = create_proposal(people.engineer, {"confidence_threshold": "0.850"}, propose=True)
    traffic = data["evaluation"]["metrics"]["traffic"]
    assert data["evaluation"]["traffic"]["n"] == 10
    assert traffic["current"]["route_share"] == {"simple_qa": 1.0} and traffic["current"]["escalation_rate"] == 0
    assert traffic["candidate"]["route_share"] == {"complex_reasoning": 1.0}
    assert traffic["candidate"]["escalation_rate"] == 1.0
    # Haiku: 1,000 in × $1 + 200 out × $5 per 1M, plus the Haiku sentinel (500 × $1 + 30 × $5): $2,650 per 1M.
    assert traffic["current"]["cost_per_million"] == "2650.00"
    # Opus has no observed requests of its own: the all-route average tokens, at $5 / $25.
    assert traffic["candidate"]["cost_per_million"] == "10650.00"
    assert traffic["candidate"]["cost_basis"]["complex_reasoning"].startswith("average over all routes")
    assert emu.stats()["by_kind"]["executor"] == 0  # replays never execute anything
    row = next(r for r in data["evaluation"]["table"] if r["dataset"] == "traffic" and r["key"] == "cost")
    assert row["current"] == "$2,650.00" and row["candidate"] == "$10,650.00" and row["delta"].startswith("+$8,000.00")
    assert not data["evaluation"]["risk"]["requires_quality_delta"]  # more escalation: no quality risk


def test_a_cheaper_proposal_cannot_be_approved_while_its_quality_delta_is_unknown(people, small_evalset):
    add_traffic(10, decided="simple_qa", confidence=0.7, route="complex_reasoning")
    data = create_proposal(people.engineer, {"confidence_threshold": "0.600"}, propose=True)
    risk = data["evaluation"]["risk"]
    assert risk["lowers_threshold"] and risk["moves_to_cheaper_routes"] and not risk["quality_known"]
    page = people.reviewer.get(f"/governance/proposals/{data['id']}/")
    assert b'data-testid="quality-warning"' in page.content and b"Quality delta: UNKNOWN" in page.content
    assert b'data-testid="approve"' not in page.content
    response = people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "quality_unknown"
    assert "lowers the confidence threshold" in error["message"] and "quality delta is unknown" in error["message"]
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"


def test_a_cheaper_proposal_with_judged_routes_shows_its_quality_delta_and_can_be_approved(people, small_evalset):
    add_traffic(8, decided="simple_qa", confidence=0.7, route="complex_reasoning", judge=5)
    add_traffic(2, decided="simple_qa", confidence=0.9, route="simple_qa", judge=4)
    data = create_proposal(people.engineer, {"confidence_threshold": "0.600"}, propose=True)
    risk = data["evaluation"]["risk"]
    assert risk["requires_quality_delta"] and risk["quality_known"]
    # Current: 80% complex_reasoning (judge 5) + 20% simple_qa (judge 4) = 4.8; candidate: all simple_qa = 4.0.
    assert risk["quality_delta"] == -0.8
    page = people.reviewer.get(f"/governance/proposals/{data['id']}/")
    assert b"Quality delta: -0.8" in page.content
    response = people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve", {"comment": "accept -0.8 for cost"})
    assert response.status_code == 200 and response.json()["status"] == "approved"


def test_the_pages_show_the_diff_the_before_after_table_and_buttons_only_to_who_may_use_them(people, small_evalset):
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, propose=True, title="Escalate more")
    listing = people.reviewer.get("/governance/proposals/")
    assert listing.status_code == 200 and b"Escalate more" in listing.content
    url = f"/governance/proposals/{data['id']}/"
    page = people.reviewer.get(url)
    assert page.status_code == 200
    for marker in (b'data-testid="diff"', b"0.750", b"0.900", b'data-testid="before-after-evalset"',
                   b"misclassification (vs labels)", b"projected cost per 1M requests", b'data-testid="approve"',
                   b'data-testid="reject"', b"csrfmiddlewaretoken"):
        assert marker in page.content, marker
    for persona in (people.engineer, people.finance, people.second_engineer):
        content = persona.get(url).content
        assert b'data-testid="approve"' not in content and b'data-testid="reject"' not in content
    # CSRF is enforced on the forms.
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(people.reviewer.user)
    assert strict.post(f"{url}approve", {"comment": "no token"}).status_code == 403
    assert Proposal.objects.get(pk=data["id"]).status == "evaluated"
    response = people.reviewer.client.post(f"{url}approve", {"comment": "fine"})
    assert response.status_code == 303 and response["Location"] == url
    assert Proposal.objects.get(pk=data["id"]).status == "approved"
    activate = people.engineer.client.post(f"{url}activate", {"activate_at": ""})
    assert activate.status_code == 303
    assert Proposal.objects.get(pk=data["id"]).status == "active"
    trail = people.finance.get("/governance/audit/")
    assert trail.status_code == 200 and b"proposal.activate" in trail.content


def test_without_the_regression_set_the_shipped_evalset_is_used(people, emu, monkeypatch, tmp_path):
    from audits import evaluation

    monkeypatch.setattr(evaluation, "EVALSET_PATH", tmp_path / "missing.jsonl")
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, propose=True)
    assert data["evaluation"]["evalset"]["path"] == "audits/evalsets/default.jsonl"
    assert data["evaluation"]["evalset"]["n"] == 60


def test_a_failed_evaluation_is_recorded_and_can_be_run_again(people, emu, monkeypatch, tmp_path):
    from audits import evaluation
    from audits.models import AuditEvent

    monkeypatch.setattr(evaluation, "EVALSET_PATH", tmp_path / "missing.jsonl")
    monkeypatch.setattr(evaluation, "FALLBACK_EVALSET_PATH", tmp_path / "also-missing.jsonl")
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, propose=True)
    assert data["status"] == "proposed" and data["evaluation"]["status"] == "failed"
    assert "no evaluation set" in data["evaluation"]["error"]
    assert AuditEvent.objects.get(action="proposal.evaluated").outcome == "denied"
    assert people.reviewer.post(f"/api/v1/proposals/{data['id']}/approve").status_code == 409
    monkeypatch.setattr(evaluation, "FALLBACK_EVALSET_PATH", evaluation.REPO_ROOT / "audits/evalsets/default.jsonl")
    response = people.engineer.post(f"/api/v1/proposals/{data['id']}/evaluate")
    assert response.status_code == 200 and response.json()["status"] == "evaluated"
