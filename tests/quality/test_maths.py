"""Quality maths against hand-computed cases."""

from __future__ import annotations

import pytest

from audits.quality_selectors import (
    NO_INFORMATION,
    Observation,
    build_report,
    calibration,
    effective_n,
    group_stat,
    wilson,
)


def test_wilson_matches_the_textbook_interval_for_8_of_10():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_of_nothing_is_the_whole_range():
    assert wilson(0, 0) == (0.0, 1.0)


def test_effective_n_is_n_for_equal_weights_and_smaller_for_unequal():
    assert effective_n([2.0] * 5) == pytest.approx(5)
    assert effective_n([1.0, 3.0]) == pytest.approx(16 / 10)


def test_a_weighted_group_by_hand():
    # scores 5 (w=1), 3 (w=3): mean = (5 + 9) / 4 = 3.5; acceptable share = 1/4
    # variance = (1*(1.5)^2 + 3*(0.5)^2) / 4 = 0.75; n_eff = 16/10 = 1.6; half = 1.96*sqrt(0.75/1.6)
    stat = group_stat("x", [Observation(5, 1.0), Observation(3, 3.0)])
    assert stat.count == 2
    assert stat.weighted_mean == pytest.approx(3.5)
    assert stat.acceptable_share == pytest.approx(0.25)
    half = 1.959963984540054 * (0.75 / 1.6) ** 0.5
    assert stat.mean_ci == pytest.approx((3.5 - half, 3.5 + half))
    assert stat.share_ci == pytest.approx(wilson(0.25 * 1.6, 1.6))


def test_calibration_error_by_hand():
    # bucket 0.9-1.0: confidences 0.95, 0.95, scores 5, 2 → accuracy 0.5, |0.5-0.95| = 0.45, weight 2
    # bucket 0.5-0.6: confidences 0.55, 0.55, scores 4, 4 → accuracy 1.0, |1.0-0.55| = 0.45, weight 2
    obs = [Observation(5, 1, 0.95), Observation(2, 1, 0.95), Observation(4, 1, 0.55), Observation(4, 1, 0.55)]
    cal = calibration(obs, threshold=0.75)
    assert [b.bucket for b in cal.buckets] == ["0.5-0.6", "0.9-1.0"]
    assert cal.buckets[1].accuracy == pytest.approx(0.5)
    assert cal.buckets[1].mean_confidence == pytest.approx(0.95)
    assert cal.ece == pytest.approx(0.45)


def test_buckets_above_the_threshold_with_the_same_accuracy_say_confidence_carries_no_information():
    obs = [Observation(s, 1, c) for c in (0.85, 0.95) for s in (5, 5, 5, 2) * 10]
    cal = calibration(obs, threshold=0.75)
    assert cal.verdict == NO_INFORMATION


def test_buckets_that_clearly_differ_do_not_get_that_verdict():
    obs = [Observation(5, 1, 0.95)] * 60 + [Observation(1, 1, 0.85)] * 60
    assert calibration(obs, threshold=0.75).verdict != NO_INFORMATION


def test_the_report_groups_by_route_model_and_bucket():
    obs = [Observation(5, 1, 0.9, "simple_qa", "haiku"), Observation(2, 3, 0.6, "code_generation", "codex")]
    report = build_report(obs, threshold=0.75)
    assert [g.key for g in report.by_route] == ["code_generation", "simple_qa"]
    assert [g.key for g in report.by_model] == ["codex", "haiku"]
    assert [g.key for g in report.by_bucket] == ["0.6-0.7", "0.9-1.0"]
    assert report.overall.weighted_mean == pytest.approx((5 + 6) / 4)
