"""The report's maths on hand-computed cases, and the selector over hand-built rows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audits.models import ShadowDecision
from audits.shadow_selectors import (
    ShadowPair,
    agreement_rate,
    confusion_matrix,
    cost_delta,
    experiment_report,
    quality_delta,
    spend_share,
)

from .conftest import decision_row, experiment

# 5 requests: production simple_qa x3, code_generation x2; the candidate escalates two simple_qa.
PAIRS = [
    ShadowPair("simple_qa", "simple_qa", 5),
    ShadowPair("simple_qa", "complex_reasoning", 4),
    ShadowPair("simple_qa", "complex_reasoning", None),
    ShadowPair("code_generation", "code_generation", 4),
    ShadowPair("code_generation", "code_generation", None),
]
AVERAGES = {"simple_qa": Decimal("0.001"), "code_generation": Decimal("0.010"),
            "complex_reasoning": Decimal("0.050")}


def test_agreement_is_the_share_of_identical_routes():
    assert agreement_rate(PAIRS) == pytest.approx(3 / 5)
    assert agreement_rate([]) is None


def test_the_confusion_matrix_counts_production_by_candidate():
    matrix = confusion_matrix(PAIRS)
    assert matrix.labels == ["code_generation", "complex_reasoning", "simple_qa"]
    assert matrix.counts == {"simple_qa": {"simple_qa": 1, "complex_reasoning": 2},
                             "code_generation": {"code_generation": 2}}
    assert matrix.rows() == [("code_generation", [2, 0, 0]), ("complex_reasoning", [0, 0, 0]),
                             ("simple_qa", [0, 2, 1])]


def test_the_cost_delta_prices_each_side_with_the_route_averages():
    # production: 3 x 0.001 + 2 x 0.010 = 0.023; candidate: 1 x 0.001 + 2 x 0.050 + 2 x 0.010 = 0.121
    delta = cost_delta(PAIRS, AVERAGES)
    assert delta.production == Decimal("0.023")
    assert delta.candidate == Decimal("0.121")
    assert delta.delta == Decimal("0.098")
    assert delta.per_request == Decimal("0.0196")
    assert delta.unpriced_routes == []
    assert cost_delta(PAIRS, {"simple_qa": Decimal("0.001")}).unpriced_routes == ["code_generation",
                                                                                  "complex_reasoning"]


def test_the_quality_delta_uses_judged_disagreements_only_else_it_is_unknown():
    # disagreeing: 2 (one judged 4). Candidate route mean 4.5 → +0.5 per judged disagreement;
    # per request: 0.5 x 2 disagreeing / 5 = 0.2
    q = quality_delta(PAIRS, {"complex_reasoning": 4.5, "simple_qa": 4.0})
    assert (q.disagreeing, q.covered) == (2, 1)
    assert q.delta_disagreeing == pytest.approx(0.5) and q.delta_per_request == pytest.approx(0.2)
    unknown = quality_delta(PAIRS, {"simple_qa": 4.0})
    assert not unknown.known and unknown.delta_per_request is None


def test_the_spend_share_is_experiment_spend_over_total():
    assert spend_share(Decimal(1), Decimal(99)) == Decimal("0.010000")
    assert spend_share(Decimal(0), Decimal(0)) is None


def test_the_report_over_hand_built_rows(db, catalog):
    exp = experiment()
    rows = [decision_row(route="simple_qa", executor_cost="0.001", judge_score=4) for _ in range(3)]
    rows += [decision_row(route="complex_reasoning", executor_cost="0.050", judge_score=5)]
    candidates = ["simple_qa", "complex_reasoning", "complex_reasoning", "complex_reasoning"]
    for row, cand in zip(rows, candidates, strict=True):
        ShadowDecision.objects.create(experiment=exp, request_id=row.request_id, production_route=row.route,
                                      candidate_route=cand, candidate_reason="r",
                                      candidate_sentinel_cost=Decimal("0.0001"))
    report = experiment_report(exp)
    assert report.sampled == 4
    assert report.agreement == pytest.approx(0.5)
    # production 3 x 0.001 + 0.05 = 0.053; candidate 0.001 + 3 x 0.05 = 0.151
    assert report.cost.delta == Decimal("0.098")
    assert report.window_requests == 4
    assert report.projected_window_delta == Decimal("0.098")
    # two disagreements, both judged 4; complex_reasoning's mean is 5 → +1, per request +0.5
    assert report.quality.delta_disagreeing == pytest.approx(1.0)
    assert report.quality.delta_per_request == pytest.approx(0.5)
    # spend: 4 x 0.0001 of (0.053 + 0.0004)
    assert report.experiment_spend == Decimal("0.0004")
    assert report.spend_share == (Decimal("0.0004") / Decimal("0.0534")).quantize(Decimal("0.000001"))
    assert report.spend_within_goal is True
    data = report.as_dict()
    assert data["cost_delta"]["sample_delta"] == "0.0980000000"
    assert data["confusion_matrix"]["counts"]["simple_qa"] == {"simple_qa": 1, "complex_reasoning": 2}


def test_the_report_prices_a_route_without_traffic_from_the_catalog(db, catalog):
    exp = experiment()
    row = decision_row(route="simple_qa", executor_cost="0.001", executor_input_tokens=1000,
                       executor_output_tokens=1000)
    ShadowDecision.objects.create(experiment=exp, request_id=row.request_id, production_route="simple_qa",
                                  candidate_route="complex_reasoning", candidate_reason="r")
    report = experiment_report(exp)
    assert report.estimated_routes == ["complex_reasoning"]
    assert report.route_averages["complex_reasoning"] > 0
    assert not report.quality.known
    assert report.as_dict()["quality_delta"]["delta_per_request"] == "unknown"
